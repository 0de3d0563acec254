-- Sign-in reads credentials from the write side (the e-mail claim and user streams): password
-- hashes are in no read model. (They were only ever copies; the events keep them.)
ALTER TABLE rm_users DROP COLUMN password_hash;
