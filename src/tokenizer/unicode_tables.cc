// The Unicode category tables are generated data (tools/reference/make_unicode_tables.py), kept in a .inc file so
// the source files stay readable; this unit compiles them.
#include "tokenizer/unicode_tables.inc"
