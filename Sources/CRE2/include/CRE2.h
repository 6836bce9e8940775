#ifndef CRE2_H
#define CRE2_H

// A C face on RE2's C++ API, so Swift can compile and run Envoy's safe_regex with RE2's own semantics.
// Texts are UTF-8 with explicit lengths (they may hold NUL bytes); strings returned are malloc'd and
// released with cre2_free_string.

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cre2_regex cre2_regex;

/// Compiles pattern; nil on a pattern RE2 refuses, with RE2's reason in *error.
cre2_regex *cre2_compile(const char *pattern, size_t length, char **error);
void cre2_free(cre2_regex *regex);

/// Whether the whole text matches (RE2::FullMatch).
bool cre2_full_match(const cre2_regex *regex, const char *text, size_t length);
/// Whether some part of the text matches (RE2::PartialMatch).
bool cre2_partial_match(const cre2_regex *regex, const char *text, size_t length);

/// Whether rewrite is valid for regex (its \N name existing groups); if not, the reason in *error.
bool cre2_check_rewrite(const cre2_regex *regex, const char *rewrite, size_t length, char **error);
/// Replaces every non-overlapping match in text with rewrite (RE2::GlobalReplace, \0-\9 name groups);
/// nil when nothing matched, otherwise the new text and its length in *result_length.
char *cre2_global_replace(const cre2_regex *regex, const char *text, size_t length,
                          const char *rewrite, size_t rewrite_length, size_t *result_length);

void cre2_free_string(char *string);

#ifdef __cplusplus
}
#endif

#endif
