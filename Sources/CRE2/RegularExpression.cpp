// RE2 behind CRE2.h: each function is a thin call into RE2, so matching is exactly RE2's.
#include "CRE2.h"

#include <re2/re2.h>

#include <cstdlib>
#include <cstring>
#include <string>

struct cre2_regex {
    re2::RE2 compiled;
    cre2_regex(re2::StringPiece pattern, const re2::RE2::Options &options) : compiled(pattern, options) {}
};

static char *copy_string(const std::string &text, size_t *length = nullptr) {
    char *copy = static_cast<char *>(std::malloc(text.size() + 1));
    if (copy == nullptr) return nullptr;
    std::memcpy(copy, text.data(), text.size());
    copy[text.size()] = '\0';
    if (length != nullptr) *length = text.size();
    return copy;
}

extern "C" cre2_regex *cre2_compile(const char *pattern, size_t length, char **error) {
    re2::RE2::Options options;
    options.set_log_errors(false);  // the caller reports the error with the field's path
    auto *regex = new cre2_regex(re2::StringPiece(pattern, length), options);
    if (!regex->compiled.ok()) {
        if (error != nullptr) *error = copy_string(regex->compiled.error());
        delete regex;
        return nullptr;
    }
    return regex;
}

extern "C" void cre2_free(cre2_regex *regex) { delete regex; }

extern "C" bool cre2_full_match(const cre2_regex *regex, const char *text, size_t length) {
    return re2::RE2::FullMatch(re2::StringPiece(text, length), regex->compiled);
}

extern "C" bool cre2_partial_match(const cre2_regex *regex, const char *text, size_t length) {
    return re2::RE2::PartialMatch(re2::StringPiece(text, length), regex->compiled);
}

extern "C" bool cre2_check_rewrite(const cre2_regex *regex, const char *rewrite, size_t length, char **error) {
    std::string reason;
    if (regex->compiled.CheckRewriteString(re2::StringPiece(rewrite, length), &reason)) return true;
    if (error != nullptr) *error = copy_string(reason);
    return false;
}

extern "C" char *cre2_global_replace(const cre2_regex *regex, const char *text, size_t length,
                                     const char *rewrite, size_t rewrite_length, size_t *result_length) {
    std::string result(text, length);
    if (re2::RE2::GlobalReplace(&result, regex->compiled, re2::StringPiece(rewrite, rewrite_length)) == 0) return nullptr;
    return copy_string(result, result_length);
}

extern "C" void cre2_free_string(char *string) { std::free(string); }
