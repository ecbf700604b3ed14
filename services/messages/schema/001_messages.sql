-- agora-messages: messages with their position in the room, reactions, read
-- markers, and the users projection that gives a message its author's
-- name. The membership replica (chat_rooms, chat_members) is made by
-- agora-chat's chat_members_init, not here.
--
-- seq is the message's position in its room (1, 2, ...), taken from the
-- room's row of room_counters in the transaction that inserts the message;
-- UNIQUE (room_id, seq) is the last guard. History pages follow seq.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    -- NULL for a bare attachment and once the message is deleted.
    content TEXT,
    reply_to TEXT,
    file_id TEXT,
    file_name TEXT,
    file_size BIGINT,
    file_type TEXT,
    edited INTEGER NOT NULL DEFAULT 0,
    edited_at TEXT,
    -- A deleted message stays as a tombstone so that seq has no holes and
    -- replies keep a target.
    deleted INTEGER NOT NULL DEFAULT 0,
    deleted_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (room_id, seq)
);

CREATE TABLE room_counters (
    room_id TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- One row per (message, emoji, user): adding twice changes nothing.
CREATE TABLE reactions (
    message_id TEXT NOT NULL REFERENCES messages (id),
    emoji TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- The newest message a user has read in a room; it only moves forward.
CREATE TABLE read_markers (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    last_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- From user.registered and user.updated (and, for a user whose event has
-- not arrived, from agora-users' GET /v1/users/me with their own token).
CREATE TABLE user_names (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
