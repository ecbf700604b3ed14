-- The chat's realtime (docs/internals/chat.md).

-- One sequence for notifications and chat feed rows, so that one cursor
-- resumes both. A counter row rather than the tables' own keys: it commits
-- with the transaction that uses it, so ids commit in id order.
CREATE TABLE push_seq (n BIGINT NOT NULL);
INSERT INTO push_seq (n) SELECT COALESCE(MAX(id), 0) FROM notifications;

-- One row per chat event (room.*, message.*), not per recipient: a resume
-- joins it with the membership replica (chat_members, made at start by
-- services/chat/members.c). user_id is the member a membership event is
-- about, who gets it even after leaving. Old rows are pruned
-- (AGORA_CHAT_FEED_KEEP).
CREATE TABLE chat_feed (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_id TEXT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX chat_feed_room ON chat_feed (room_id, id);

-- Presence from user.online/offline; seq orders the changes (the hub
-- numbers them), so a late event never overrides a newer state.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    online INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    changed_at TEXT NOT NULL
);
