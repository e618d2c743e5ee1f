"""Pure domain: records, validation and policies. No I/O, no clock reads, no wire types."""
