CREATE TABLE notes (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE seen (
    event_id TEXT PRIMARY KEY,
    note_id TEXT NOT NULL
);
