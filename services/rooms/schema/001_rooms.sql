-- agora-rooms: chat rooms and who belongs to them (docs/internals/chat.md).
--
-- version is the room's one counter: +1 on every change of the room or its
-- membership, carried by every room.* event and member lookup. Writers bump
-- it with a compare-and-set (UPDATE ... SET version = version + 1 WHERE
-- version = <read>), so two concurrent changes of one room never share a
-- version. A deleted room's row is gone; its last version went out in
-- room.deleted.
CREATE TABLE rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    is_private BIGINT NOT NULL DEFAULT 0 CHECK (is_private IN (0, 1)),
    owner_id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX rooms_created ON rooms (created_at, id);

-- One row per member. joined_version is the room's version when the member
-- joined: it orders members by seniority without ties (the user.deleted
-- hand-over picks the longest-standing admin, else member).
CREATE TABLE room_members (
    room_id TEXT NOT NULL REFERENCES rooms (id),
    user_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at TEXT NOT NULL,
    joined_version BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);
CREATE INDEX room_members_seniority ON room_members (room_id, joined_version);
-- One owner per room, whatever the code does.
CREATE UNIQUE INDEX room_members_one_owner ON room_members (room_id) WHERE role = 'owner';
