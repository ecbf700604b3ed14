-- Full-text search on SQLite: an FTS5 index over content whose rowid is the
-- message's rowid, kept in step by triggers (so no code path can forget it).
-- unicode61 folds case and diacritics.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, tokenize = 'unicode61 remove_diacritics 2');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.content IS NOT NULL BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = old.rowid;
    INSERT INTO messages_fts (rowid, content)
    SELECT new.rowid, new.content WHERE new.content IS NOT NULL;
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = old.rowid;
END;
