-- agora-notifications (SQLite). The PostgreSQL twin differs only in the
-- id columns (BIGSERIAL there).

-- What the service knows of users, from user.registered/updated/deleted
-- (source 'event') or, for users whose events it never saw, from their
-- verified tokens (source 'token'; never overwrites an event's row). A
-- deleted user keeps a tombstone so that a late token cannot bring them
-- back.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT,
    email TEXT,
    role TEXT NOT NULL DEFAULT 'customer',
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    source TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX users_role ON users (role, deleted);

-- One row per (event, recipient): the unique key is the second guard
-- against a duplicate (the bus inbox is the first). Ids only grow, and
-- commit in id order (one consumer thread writes them), so "everything
-- after id N" is a resume point with no gap.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL,
    is_read BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_user ON notifications (user_id, id);

-- Mail to send, written in the transaction of the event that asks for it
-- and sent by the mailer thread after commit (at most one per event and
-- recipient).
CREATE TABLE mail_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'PENDING'
        CHECK (state IN ('PENDING', 'SENT', 'FAILED', 'CANCELLED')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL,
    sent_at TEXT,
    UNIQUE (event_id, user_id)
);
CREATE INDEX mail_outbox_due ON mail_outbox (state, next_attempt_ms);
