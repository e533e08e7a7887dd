-- Messages in a row the bot could not answer: the handoff rule "repeated no-answer" counts them.
ALTER TABLE conversations ADD COLUMN unanswered BIGINT NOT NULL DEFAULT 0;
