-- The seq of a conversation's newest customer message. With `processed_seq` it says at once
-- whether any customer message still waits for a bot turn (`last_customer_seq > processed_seq`),
-- which the ingest needs to settle a message on a conversation a person owns without a turn.

ALTER TABLE conversations ADD COLUMN last_customer_seq BIGINT NOT NULL DEFAULT 0;

UPDATE conversations SET last_customer_seq = COALESCE(
    (SELECT MAX(m.seq) FROM messages m
     WHERE m.conversation_id = conversations.id AND m.author = 'customer'),
    0);
