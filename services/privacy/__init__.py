"""Personal data kept only as long as needed: retention of transcripts and call documents, erasure
of one number everywhere, and the suppression list that keeps an erased number out of later syncs.
How it fits together, and every personal field: docs/privacy.md."""
