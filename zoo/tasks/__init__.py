"""Task models shared by families: a family supplies a backbone, the task adds the head."""
