"""What every capability shares; imports nothing else of Sluicegate."""
