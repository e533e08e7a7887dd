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
    /// Answers a hello that asks nothing yet.
    HowCanIHelp,
    /// Answers thanks.
    YouAreWelcome,
    /// Answers a goodbye.
    Goodbye,
    /// The conversation goes to a person.
    Handoff,
    /// The conversation goes to a person because the customer is upset.
    HandoffSorry,
    /// `{n}`: the customer's place in the queue.
    QueuePosition,
    /// `{name}`: the agent who took the conversation.
    AgentJoined,
    /// `{when}`: outside working hours, when someone will answer.
    OutsideHours,
    /// A person handed the conversation back to the bot.
    BackToBot,
    /// After resolving: asks for a 1-5 rating (quick replies carry the numbers).
    RatingRequest,
    ThanksForRating,
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
        (HowCanIHelp, "ru") => "Чем могу помочь?",
        (HowCanIHelp, "vi") => "Tôi có thể giúp gì cho bạn?",
        (HowCanIHelp, "zh") => "请问有什么可以帮您？",
        (HowCanIHelp, _) => "How can I help you?",
        (YouAreWelcome, "ru") => "Пожалуйста! Если появятся ещё вопросы, пишите.",
        (YouAreWelcome, "vi") => "Không có gì! Nếu còn câu hỏi nào, bạn cứ nhắn nhé.",
        (YouAreWelcome, "zh") => "不客气！如果还有其他问题，欢迎随时留言。",
        (YouAreWelcome, _) => "You're welcome! Write any time if you have another question.",
        (Goodbye, "ru") => "Всего доброго! Будем рады помочь снова.",
        (Goodbye, "vi") => "Chào bạn! Rất vui được hỗ trợ bạn lần sau.",
        (Goodbye, "zh") => "再见！期待再次为您服务。",
        (Goodbye, _) => "Goodbye! We're glad to help any time.",
        (Handoff, "ru") => "Передаю ваш вопрос сотруднику поддержки. Он ответит здесь, в этом чате.",
        (Handoff, "vi") => "Tôi đang chuyển cuộc trò chuyện cho nhân viên hỗ trợ. Họ sẽ trả lời bạn ngay tại đây.",
        (Handoff, "zh") => "正在为您转接人工客服，客服人员会在这里回复您。",
        (Handoff, _) => "I'm passing your conversation to a member of our support team. They will reply here.",
        (HandoffSorry, "ru") => "Извините за неудобства. Передаю разговор сотруднику поддержки, он ответит здесь, в этом чате.",
        (HandoffSorry, "vi") => "Xin lỗi vì sự bất tiện này. Tôi đang chuyển cuộc trò chuyện cho nhân viên hỗ trợ, họ sẽ trả lời bạn ngay tại đây.",
        (HandoffSorry, "zh") => "很抱歉给您带来不便。正在为您转接人工客服，客服人员会在这里回复您。",
        (HandoffSorry, _) => "I'm sorry about the trouble. I'm passing your conversation to a member of our support team; they will reply here.",
        (QueuePosition, "ru") => "Вы {n}-й в очереди. Сотрудник скоро подключится.",
        (QueuePosition, "vi") => "Bạn đang ở vị trí thứ {n} trong hàng chờ. Nhân viên sẽ sớm tham gia.",
        (QueuePosition, "zh") => "您目前排在第 {n} 位，客服人员马上就来。",
        (QueuePosition, _) => "You are number {n} in the queue. A person will join shortly.",
        (AgentJoined, "ru") => "{name} подключился к разговору.",
        (AgentJoined, "vi") => "{name} đã tham gia cuộc trò chuyện.",
        (AgentJoined, "zh") => "{name} 已加入对话。",
        (AgentJoined, _) => "{name} has joined the conversation.",
        (OutsideHours, "ru") => "Сейчас мы не работаем. Сотрудник ответит здесь {when}; ваше сообщение сохранено.",
        (OutsideHours, "vi") => "Hiện chúng tôi ngoài giờ làm việc. Nhân viên sẽ trả lời tại đây {when}; tin nhắn của bạn đã được lưu.",
        (OutsideHours, "zh") => "现在是非工作时间。客服人员将于 {when} 在这里回复您，您的消息已保存。",
        (OutsideHours, _) => "We're outside working hours right now. A person will answer here {when}; your message is saved.",
        (BackToBot, "ru") => "Вы снова общаетесь с виртуальным помощником. Напишите, если нужна помощь.",
        (BackToBot, "vi") => "Bạn đang trò chuyện lại với trợ lý ảo. Hãy nhắn nếu cần giúp đỡ.",
        (BackToBot, "zh") => "您现在再次与虚拟助手对话。如需帮助，请随时留言。",
        (BackToBot, _) => "You're chatting with our virtual assistant again. Write if you need anything.",
        (RatingRequest, "ru") => "Ваш вопрос решён. Оцените, пожалуйста, нашу помощь от 1 до 5.",
        (RatingRequest, "vi") => "Yêu cầu của bạn đã được giải quyết. Vui lòng đánh giá sự hỗ trợ của chúng tôi từ 1 đến 5.",
        (RatingRequest, "zh") => "您的问题已解决。请为我们的服务打分（1 到 5 分）。",
        (RatingRequest, _) => "Your conversation was resolved. How would you rate our help, from 1 to 5?",
        (ThanksForRating, "ru") => "Спасибо за оценку!",
        (ThanksForRating, "vi") => "Cảm ơn bạn đã đánh giá!",
        (ThanksForRating, "zh") => "感谢您的评价！",
        (ThanksForRating, _) => "Thank you for your rating!",
    }
}

/// The sentence with its `{placeholders}` filled in.
pub fn fill(p: Phrase, lang: &str, values: &[(&str, &str)]) -> String {
    let mut text = phrase(p, lang).to_string();
    for (key, value) in values {
        text = text.replace(&format!("{{{key}}}"), value);
    }
    text
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
            Phrase::HowCanIHelp,
            Phrase::YouAreWelcome,
            Phrase::Goodbye,
            Phrase::Handoff,
            Phrase::HandoffSorry,
            Phrase::QueuePosition,
            Phrase::AgentJoined,
            Phrase::OutsideHours,
            Phrase::BackToBot,
            Phrase::RatingRequest,
            Phrase::ThanksForRating,
        ] {
            let english = phrase(p, "en");
            for lang in ["ru", "vi", "zh"] {
                assert_ne!(phrase(p, lang), english, "{p:?} in {lang}");
            }
            assert_eq!(phrase(p, "de"), english);
        }
    }
}
