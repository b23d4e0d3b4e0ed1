-- A file's content row (blobs) is shared by every file of its owner with the same hash, and it is
-- collected (deleted) once no file names it. With ON DELETE CASCADE, a collection racing a write
-- that reuses the same content could delete the just-written file: the collector's snapshot did
-- not see the new file, and the cascade then removed it once it was committed. Without the cascade
-- that race fails the collection (foreign key violation, the statement is refused) and deletes
-- nothing. An account's erasure still removes its blobs and files together (both cascade from
-- users, and the check runs at the end of the statement).
ALTER TABLE files DROP CONSTRAINT IF EXISTS files_owner_id_sha256_fkey;
ALTER TABLE files ADD CONSTRAINT files_owner_id_sha256_fkey
    FOREIGN KEY (owner_id, sha256) REFERENCES blobs (owner_id, sha256);
