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
    /// Introduces up to three articles offered as quick replies.
    DidYouMean,
    /// No article is close enough: ask the customer to say it differently.
    Rephrase,
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
        (DidYouMean, "ru") => "Возможно, вы имели в виду одну из этих статей?",
        (DidYouMean, "vi") => "Có phải bạn muốn hỏi về một trong những bài viết này?",
        (DidYouMean, "zh") => "您是想问以下哪个问题？",
        (DidYouMean, _) => "Did you mean one of these?",
        (Rephrase, "ru") => "Я не уверен, что правильно понял. Опишите, пожалуйста, вопрос другими словами.",
        (Rephrase, "vi") => "Tôi chưa chắc đã hiểu đúng. Bạn có thể mô tả câu hỏi bằng cách khác không?",
        (Rephrase, "zh") => "我不确定是否理解了您的问题。能换一种说法描述一下吗？",
        (Rephrase, _) => "I'm not sure I understood. Could you describe your question in other words?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_language_has_its_own_sentences() {
        for p in [
            Phrase::Greeting,
            Phrase::CannotAnswerYet,
            Phrase::DidYouMean,
            Phrase::Rephrase,
        ] {
            let english = phrase(p, "en");
            for lang in ["ru", "vi", "zh"] {
                assert_ne!(phrase(p, lang), english, "{p:?} in {lang}");
            }
            assert_eq!(phrase(p, "de"), english);
        }
    }
}
