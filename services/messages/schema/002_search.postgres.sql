-- Full-text search on PostgreSQL: a generated tsvector over content
-- ('simple' configuration: lower-cased words, no stemming, as SQLite's
-- unicode61 matches) with a GIN index. A deleted message's NULL content
-- indexes nothing.
ALTER TABLE messages ADD COLUMN search tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', COALESCE(content, ''))) STORED;
CREATE INDEX messages_search ON messages USING GIN (search);
