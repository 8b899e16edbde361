-- Every secret replaced in the last 24 hours signs until its own 24 hours end. One
-- previous secret per handler was not enough: a second rotation within the day
-- overwrote the first one's, which stopped signing a day early. The secrets replaced,
-- newest first, as a JSON array of [secret, until (microseconds)], pruned when the
-- secret is rotated again.
ALTER TABLE handlers ADD COLUMN previous_secrets TEXT NOT NULL DEFAULT '[]';
UPDATE handlers
SET previous_secrets = json_array(json_array(previous_secret, previous_secret_until))
WHERE previous_secret IS NOT NULL AND previous_secret_until IS NOT NULL;
-- Dropped rather than left stale: the list is the only place the secrets are read from.
ALTER TABLE handlers DROP COLUMN previous_secret;
ALTER TABLE handlers DROP COLUMN previous_secret_until;
