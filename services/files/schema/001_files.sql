-- agora-files: the metadata of stored files. The bytes live on disk under
-- AGORA_FILES_DIR/blobs/<id>, written and fsync'd before the row commits,
-- so a row never exists without its bytes (a crash in between leaves an
-- orphan blob, removed by the start-up sweep). The membership replica
-- (chat_rooms, chat_members) is made by agora-chat's chat_members_init.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX files_by_room ON files (room_id, created_at, id);

-- Files whose row is gone (deleted, or their room deleted) and whose bytes
-- are still to be removed: inserted in the transaction that deletes the
-- row, emptied after it commits and at start, so a crash between the
-- commit and the unlink only delays the removal.
CREATE TABLE file_trash (
    id TEXT PRIMARY KEY
);
