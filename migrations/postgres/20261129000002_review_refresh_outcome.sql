ALTER TABLE needs_manual_review ADD COLUMN refresh_outcome TEXT;
