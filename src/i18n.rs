//! The bot's fixed sentences in the languages Frontdesk supports (en, ru, vi, zh).
//!
//! Replies follow the customer's language; anything else falls back to English.

/// Languages the bot speaks.
pub const SUPPORTED: [&str; 4] = ["en", "ru", "vi", "zh"];

/// A sentence the bot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phrase {
    Greeting,
    CannotAnswerYet,
}

/// The sentence in `lang` (a two-letter code), English when that language is not supported.
pub fn phrase(p: Phrase, lang: &str) -> &'static str {
    use Phrase::*;
    match (p, lang) {
        (Greeting, "ru") => "Здравствуйте! Я виртуальный помощник службы поддержки.",
        (Greeting, "vi") => "Xin chào! Tôi là trợ lý ảo của bộ phận hỗ trợ.",
        (Greeting, "zh") => "您好！我是客服虚拟助手。",
        (Greeting, _) => "Hello! I'm the support team's virtual assistant.",
        (CannotAnswerYet, "ru") => "Пока я не умею отвечать на вопросы: база знаний ещё не подключена. Ваше сообщение сохранено, команда поддержки его увидит.",
        (CannotAnswerYet, "vi") => "Hiện tôi chưa thể trả lời câu hỏi: cơ sở tri thức chưa được kết nối. Tin nhắn của bạn đã được lưu và đội hỗ trợ sẽ xem.",
        (CannotAnswerYet, "zh") => "我暂时还不能回答问题：知识库尚未接入。您的消息已保存，客服团队会看到。",
        (CannotAnswerYet, _) => "I can't answer questions yet: the knowledge base isn't connected. Your message is saved and the support team will see it.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_language_has_its_own_sentences() {
        for p in [Phrase::Greeting, Phrase::CannotAnswerYet] {
            let english = phrase(p, "en");
            for lang in ["ru", "vi", "zh"] {
                assert_ne!(phrase(p, lang), english, "{p:?} in {lang}");
            }
            assert_eq!(phrase(p, "de"), english);
        }
    }
}
