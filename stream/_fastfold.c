/* _fastfold.c: the decode and fold of plain `activity` messages, compiled.
 *
 * It is the compiled twin of the two stages decode.decode -> fold.fold, fused for speed
 * and called by stages.fold_prepared. The pure Python path (decode.decode, which calls
 * events.decode_batch, -> fold.fold) is the definition; this module
 * is an optional shortcut for the one shape that dominates real traffic, and it must
 * give exactly the writes the Python path gives. It accepts a message only when it can
 * decide everything about it here:
 *
 *   - a JSON object of the fields `event_id`, `type`, `user_id`, `ts` and optionally
 *     `props` (each at most once, in any order, JSON whitespace anywhere), nothing else;
 *   - strings of printable ASCII without escapes; `type` is "activity"; `event_id` 1-128
 *     and `user_id` 1-256 characters; `props` null or an object of such strings;
 *   - `ts` a JSON integer of 1-15 digits, or an RFC 3339 string
 *     `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` with a valid date and time
 *     (uppercase T and Z, offset hours 0-23 and minutes 0-59);
 *   - an event time inside the accepted window.
 *
 * Anything else, valid or not, is handed back to the Python path, which decides it. So
 * the shortcut can only ever take what the Python path would accept as an activity
 * event, with the same user and time; tests/unit/test_fastfold.py checks the two agree.
 *
 * For each message it takes, it applies the activity branch of fold.fold: the user's
 * shard (CRC-32, as keys.user_hash), the local day, the (user, day) pair skipped when
 * `seen` maps the user to that day or when the day's HyperLogLog set of this batch holds
 * the user, else added to that set, to the shard's activity list of the day, and to
 * `new_days` (user -> the latest such day). It also counts, per shard, the messages whose
 * day is before `today` by age bucket (1, 2-7, 8-30, 31+ days), the late-events counter
 * that fold.fold keeps in the totals map.
 *
 * With STREAM_USER_ID_KEY (ctx ends with the hasher's cache and the hasher), the user is
 * its keyed hash from the start, as in fold.fold: looked up in the cache (raw id -> hash),
 * the hasher called on a miss; shard, sets and lists all get the hash.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define MAX_FUTURE_MS (5LL * 60 * 1000)
#define DAY_MS 86400000LL
#define SLOT_MS 900000LL

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A JSON string of printable ASCII without escapes; *p at the opening quote. */
static inline int read_str(const char **pp, const char *end, span *out) {
    const char *p = *pp;
    if (p >= end || *p != '"') return 0;
    p++;
    const char *s = p;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c > 0x7e || c == '\\') return 0;
        p++;
    }
    if (p >= end) return 0;
    out->p = s;
    out->n = p - s;
    *pp = p + 1;
    return 1;
}

static inline int digits(const char *p, int n, int *v) {
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        x = x * 10 + (p[i] - '0');
    }
    *v = x;
    return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static inline int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline int days_in_month(int y, int m) {
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
    return dm[m - 1];
}

/* RFC 3339 as events.parse_ts accepts it (the subset above); epoch ms into *ms. */
static int parse_rfc3339(span s, int64_t *ms) {
    const char *p = s.p;
    Py_ssize_t n = s.n;
    int y, mo, d, h, mi, sec;
    if (n < 20) return 0;
    if (!digits(p, 4, &y) || p[4] != '-' || !digits(p + 5, 2, &mo) || p[7] != '-' ||
        !digits(p + 8, 2, &d) || p[10] != 'T' || !digits(p + 11, 2, &h) || p[13] != ':' ||
        !digits(p + 14, 2, &mi) || p[16] != ':' || !digits(p + 17, 2, &sec))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
        mi > 59 || sec > 59)
        return 0;
    Py_ssize_t i = 19;
    int frac = 0;
    if (i < n && p[i] == '.') {
        i++;
        Py_ssize_t start = i;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (i - start < 3) frac = frac * 10 + (p[i] - '0');
            i++;
        }
        Py_ssize_t nd = i - start;
        if (nd == 0) return 0;
        for (Py_ssize_t k = nd; k < 3; k++) frac *= 10;
    }
    int64_t offset_min = 0;
    if (i < n && p[i] == 'Z') {
        i++;
    } else if (i + 6 <= n && (p[i] == '+' || p[i] == '-') && p[i + 3] == ':') {
        int oh, om;
        if (!digits(p + i + 1, 2, &oh) || !digits(p + i + 4, 2, &om)) return 0;
        if (oh > 23 || om > 59) return 0;
        offset_min = (p[i] == '-' ? -1 : 1) * (oh * 60 + om);
        i += 6;
    } else {
        return 0;
    }
    if (i != n) return 0;
    int64_t days = days_from_civil(y, mo, d);
    *ms = ((days * 24 + h) * 60 + mi - offset_min) * 60000LL + sec * 1000LL + frac;
    return 1;
}

enum { F_EVENT_ID = 1, F_TYPE = 2, F_USER_ID = 4, F_TS = 8, F_PROPS = 16 };

/* `props`: null, or an object of plain strings. */
static int skip_props(const char **pp, const char *end) {
    const char *p = *pp;
    if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
        *pp = p + 4;
        return 1;
    }
    if (p >= end || *p != '{') return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 1;
    }
    for (;;) {
        span k, v;
        if (!read_str(&p, end, &k)) return 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return 0;
        p = skip_ws(p + 1, end);
        if (!read_str(&p, end, &v)) return 0;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            *pp = p + 1;
            return 1;
        }
        return 0;
    }
}

/* The user and event time of a plain activity message; 0 when not taken here. */
static int parse_activity(const char *p, Py_ssize_t len, span *user, int64_t *ts) {
    const char *end = p + len;
    int have = 0;
    span ev, ty;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return 0;
    p = skip_ws(p + 1, end);
    for (;;) {
        span key;
        if (!read_str(&p, end, &key)) return 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return 0;
        p = skip_ws(p + 1, end);
        int f;
        if (key.n == 8 && memcmp(key.p, "event_id", 8) == 0) f = F_EVENT_ID;
        else if (key.n == 4 && memcmp(key.p, "type", 4) == 0) f = F_TYPE;
        else if (key.n == 7 && memcmp(key.p, "user_id", 7) == 0) f = F_USER_ID;
        else if (key.n == 2 && memcmp(key.p, "ts", 2) == 0) f = F_TS;
        else if (key.n == 5 && memcmp(key.p, "props", 5) == 0) f = F_PROPS;
        else return 0;
        if (have & f) return 0;
        have |= f;
        if (f == F_EVENT_ID) {
            if (!read_str(&p, end, &ev) || ev.n < 1 || ev.n > 128) return 0;
        } else if (f == F_TYPE) {
            if (!read_str(&p, end, &ty) || ty.n != 8 || memcmp(ty.p, "activity", 8) != 0)
                return 0;
        } else if (f == F_USER_ID) {
            if (!read_str(&p, end, user) || user->n < 1 || user->n > 256) return 0;
        } else if (f == F_TS) {
            if (p < end && *p == '"') {
                span s;
                if (!read_str(&p, end, &s) || !parse_rfc3339(s, ts)) return 0;
            } else {
                const char *s = p;
                int64_t v = 0;
                /* Digits past the 16th are not accumulated (refused below anyway): a
                 * longer number would overflow int64_t, undefined behaviour. */
                for (; p < end && *p >= '0' && *p <= '9'; p++)
                    if (p - s < 16) v = v * 10 + (*p - '0');
                Py_ssize_t nd = p - s;
                if (nd < 1 || nd > 15 || (nd > 1 && *s == '0')) return 0;
                if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
                *ts = v;
            }
        } else {
            if (!skip_props(&p, end)) return 0;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            p = skip_ws(p + 1, end);
            break;
        }
        return 0;
    }
    if (p != end) return 0;
    return (have & (F_EVENT_ID | F_TYPE | F_USER_ID | F_TS)) ==
           (F_EVENT_ID | F_TYPE | F_USER_ID | F_TS);
}

/* -- Segment `track` and `screen` calls (the `segment` preset of stream/formats) ------
 *
 * With shape 1, fold_activity takes the messages the `segment` preset turns into plain
 * activity events without any choice left: a JSON object of ASCII bytes (any nesting,
 * each value strictly JSON) whose `type` is "track" or "screen" (so rules 5 and 6 of the
 * preset do not depend on `context`), whose `event` is not one of the four names of
 * rules 1-4 (any other value, or none, leaves rule 6), with `messageId`, `userId` (else,
 * when it is absent, null or "", `anonymousId`) and `timestamp` as parse_activity takes
 * `event_id`, `user_id` and `ts`. Anything else (escapes in a key or in these values, a
 * key met twice, a value of another type, numbers msgspec might read differently) is
 * handed back to the Python path, which decides it through the mapping. */

#define MAX_DEPTH 32

static int skip_value(const char **pp, const char *end, int depth);

/* Bytes a string scan must stop at: the closing quote, an escape, a control character
 * or a byte that is not ASCII (one table lookup per byte, not four comparisons: the
 * calls are mostly long strings). */
static unsigned char stop_byte[256];

static void init_stop_bytes(void) {
    for (int c = 0; c < 256; c++)
        stop_byte[c] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\');
}

/* A JSON string of ASCII (escapes allowed, but not of a UTF-16 surrogate). */
static int skip_string(const char **pp, const char *end) {
    const char *p = *pp;
    if (p >= end || *p != '"') return 0;
    p++;
    while (p < end && *p != '"') {
        while (p + 8 <= end && !(stop_byte[(unsigned char)p[0]] | stop_byte[(unsigned char)p[1]] |
                                  stop_byte[(unsigned char)p[2]] | stop_byte[(unsigned char)p[3]] |
                                  stop_byte[(unsigned char)p[4]] | stop_byte[(unsigned char)p[5]] |
                                  stop_byte[(unsigned char)p[6]] | stop_byte[(unsigned char)p[7]]))
            p += 8;
        while (p < end && !stop_byte[(unsigned char)*p]) p++;
        if (p >= end || *p == '"') break;
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c > 0x7e) return 0;
        if (c == '\\') {
            p++;
            if (p >= end) return 0;
            c = (unsigned char)*p;
            if (c == 'u') {
                unsigned v = 0;
                for (int k = 1; k <= 4; k++) {
                    if (p + k >= end) return 0;
                    unsigned char h = (unsigned char)p[k];
                    v <<= 4;
                    if (h >= '0' && h <= '9') v |= h - '0';
                    else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
                    else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
                    else return 0;
                }
                if (v >= 0xD800 && v <= 0xDFFF) return 0;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
        }
        p++;
    }
    if (p >= end) return 0;
    *pp = p + 1;
    return 1;
}

/* A JSON number of at most 15 integer digits, an optional fraction and a 1-2 digit
 * exponent (nothing a decoder could read as infinite or as a big integer). */
static int skip_number(const char **pp, const char *end) {
    const char *p = *pp;
    if (p < end && *p == '-') p++;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    if (p == s || p - s > 15 || (p - s > 1 && *s == '0')) return 0;
    if (p < end && *p == '.') {
        s = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == s || p - s > 17) return 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        s = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == s || p - s > 2) return 0;
    }
    *pp = p;
    return 1;
}

static int skip_container(const char **pp, const char *end, int depth, char close) {
    const char *p = skip_ws(*pp + 1, end);
    if (p < end && *p == close) {
        *pp = p + 1;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (!skip_string(&p, end)) return 0;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') return 0;
            p = skip_ws(p + 1, end);
        }
        if (!skip_value(&p, end, depth + 1)) return 0;
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == close) {
            *pp = p + 1;
            return 1;
        }
        return 0;
    }
}

static int skip_value(const char **pp, const char *end, int depth) {
    const char *p = *pp;
    if (p >= end || depth > MAX_DEPTH) return 0;
    switch (*p) {
    case '"': return skip_string(pp, end);
    case '{': return skip_container(pp, end, depth, '}');
    case '[': return skip_container(pp, end, depth, ']');
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) { *pp = p + 4; return 1; }
        return 0;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) { *pp = p + 5; return 1; }
        return 0;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) { *pp = p + 4; return 1; }
        return 0;
    default: return skip_number(pp, end);
    }
}

static inline int is_null(const char *p, const char *end) {
    return end - p >= 4 && memcmp(p, "null", 4) == 0;
}

enum { S_TYPE = 1, S_EVENT = 2, S_ID = 4, S_USER = 8, S_ANON = 16, S_TS = 32 };

/* A user id: 1 = a present string (in *out), 2 = not present (null or ""), 0 = hand back. */
static int read_user(const char **pp, const char *end, span *out) {
    if (is_null(*pp, end)) {
        *pp += 4;
        return 2;
    }
    if (!read_str(pp, end, out) || out->n > 256) return 0;
    return out->n ? 1 : 2;
}

static int parse_segment_track(const char *p, Py_ssize_t len, span *user, int64_t *ts) {
    const char *end = p + len;
    int have = 0, user_state = 0, anon_state = 0;
    span id, ty, name, uid = {NULL, 0}, anon = {NULL, 0};
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') return 0;
    for (;;) {
        span key;
        const char *k = p;
        if (!skip_string(&p, end)) return 0;
        key.p = k + 1;
        key.n = p - k - 2;
        if (memchr(key.p, '\\', (size_t)key.n)) return 0;  /* an escaped key: Python */
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return 0;
        p = skip_ws(p + 1, end);
        int f = 0;
        if (key.n == 4 && memcmp(key.p, "type", 4) == 0) f = S_TYPE;
        else if (key.n == 5 && memcmp(key.p, "event", 5) == 0) f = S_EVENT;
        else if (key.n == 9 && memcmp(key.p, "messageId", 9) == 0) f = S_ID;
        else if (key.n == 6 && memcmp(key.p, "userId", 6) == 0) f = S_USER;
        else if (key.n == 11 && memcmp(key.p, "anonymousId", 11) == 0) f = S_ANON;
        else if (key.n == 9 && memcmp(key.p, "timestamp", 9) == 0) f = S_TS;
        if (f & have) return 0;
        have |= f;
        if (f == S_TYPE) {
            if (!read_str(&p, end, &ty)) return 0;
            if (!((ty.n == 5 && memcmp(ty.p, "track", 5) == 0) ||
                  (ty.n == 6 && memcmp(ty.p, "screen", 6) == 0)))
                return 0;
        } else if (f == S_EVENT) {
            if (p < end && *p == '"') {
                if (!read_str(&p, end, &name)) return 0;
                if ((name.n == 9 && memcmp(name.p, "Signed Up", 9) == 0) ||
                    (name.n == 22 && memcmp(name.p, "Subscription Cancelled", 22) == 0) ||
                    (name.n == 15 && memcmp(name.p, "Order Completed", 15) == 0) ||
                    (name.n == 16 && memcmp(name.p, "Survey Responded", 16) == 0))
                    return 0;
            } else if (!skip_value(&p, end, 1)) {
                return 0;
            }
        } else if (f == S_ID) {
            if (!read_str(&p, end, &id) || id.n < 1 || id.n > 128) return 0;
        } else if (f == S_USER) {
            if (!(user_state = read_user(&p, end, &uid))) return 0;
        } else if (f == S_ANON) {
            if (!(anon_state = read_user(&p, end, &anon))) return 0;
        } else if (f == S_TS) {
            if (p < end && *p == '"') {
                span s;
                if (!read_str(&p, end, &s) || !parse_rfc3339(s, ts)) return 0;
            } else {
                const char *s = p;
                int64_t v = 0;
                while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
                Py_ssize_t nd = p - s;
                if (nd < 1 || nd > 15 || (nd > 1 && *s == '0')) return 0;
                if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
                *ts = v;
            }
        } else if (!skip_value(&p, end, 1)) {
            return 0;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}') {
            p = skip_ws(p + 1, end);
            break;
        }
        return 0;
    }
    if (p != end) return 0;
    if ((have & (S_TYPE | S_ID | S_TS)) != (S_TYPE | S_ID | S_TS)) return 0;
    if (user_state == 1) *user = uid;
    else if (anon_state == 1) *user = anon;
    else return 0;
    return 1;
}

/* -- UserMap: user id -> int64, compact -------------------------------------------------
 *
 * The worker's per-user caches, `seen` (user -> a day whose activity is in Redis) and the
 * store's bit numbers (user -> number), are looked up once or twice per event, in tables
 * of hundreds of thousands of users. A dict lookup there costs several cache misses (its
 * index, its entry, the key object compared, the value object): measured, the fold's
 * `seen` lookup alone was about half of its time. This table keeps each entry in one
 * 40-byte slot of an open-addressed array (a 64-bit hash, the value, and the key's
 * UTF-8 inline up to 16 bytes, else in an arena): one miss for most lookups. It maps
 * str keys to int values and offers what the caches use of a dict: len, in, [], get,
 * []=, update (from a dict), clear, and keep_newest (the stand-in for a dict's insertion order when
 * the number cache is halved) and add_flat (a script's reply of numbers, taken as it
 * comes). stream/usermap.py is its pure twin (a dict). */

#define UM_INLINE 16
#define UM_BLOCK 16
#define UM_MIN_SLOTS 1024

typedef struct {
    uint64_t hash; /* 0: an empty slot (hashes are never 0) */
    int64_t value;
    uint32_t len;
    uint32_t seq; /* insertion order, for keep_newest */
    union {
        char in[UM_INLINE];
        size_t off; /* longer keys: their offset in the arena */
    } k;
} um_slot;

typedef struct {
    PyObject_HEAD
    um_slot *slots;
    size_t mask; /* slot count - 1 (a power of 2) */
    Py_ssize_t used;
    char *arena;
    size_t alen, acap;
    uint32_t seq;
} UserMap;

static PyTypeObject UserMapType;

static uint64_t um_hash(const char *data, Py_ssize_t len) {
    /* MurmurHash64A, as in store/_redisformats.c (which must match Redis's own, seed
     * and all); written again here with a seed of its own, so that each extension
     * builds from its one file. */
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const int r = 47;
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 0x2545F4914F6CDD1DULL ^ ((uint64_t)len * m);
    const unsigned char *end = p + (len - (len & 7));
    while (p != end) {
        uint64_t k;
        memcpy(&k, p, 8);
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
        p += 8;
    }
    switch (len & 7) {
    case 7: h ^= (uint64_t)p[6] << 48; /* fall through */
    case 6: h ^= (uint64_t)p[5] << 40; /* fall through */
    case 5: h ^= (uint64_t)p[4] << 32; /* fall through */
    case 4: h ^= (uint64_t)p[3] << 24; /* fall through */
    case 3: h ^= (uint64_t)p[2] << 16; /* fall through */
    case 2: h ^= (uint64_t)p[1] << 8; /* fall through */
    case 1:
        h ^= (uint64_t)p[0];
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h ? h : 1;
}

/* A slot's key: inline, or in `arena` (the table's, or an old one being copied). */
static inline const char *um_slot_key(const um_slot *s, const char *arena) {
    return s->len <= UM_INLINE ? s->k.in : arena + s->k.off;
}

static inline const char *um_key(const UserMap *m, const um_slot *s) {
    return um_slot_key(s, m->arena);
}

/* The slot holding the key, or the empty slot where it would go. */
static inline um_slot *um_find(const UserMap *m, const char *key, Py_ssize_t len,
                               uint64_t h) {
    size_t i = (size_t)h & m->mask;
    for (;;) {
        um_slot *s = &m->slots[i];
        if (s->hash == 0) return s;
        if (s->hash == h && s->len == (uint32_t)len &&
            memcmp(um_key(m, s), key, (size_t)len) == 0)
            return s;
        i = (i + 1) & m->mask;
    }
}

/* The live slot of the key, or NULL. */
static inline um_slot *um_get(const UserMap *m, const char *key, Py_ssize_t len) {
    um_slot *s = um_find(m, key, len, um_hash(key, len));
    return s->hash ? s : NULL;
}

static int um_alloc(UserMap *m, size_t slots) {
    um_slot *t = PyMem_Calloc(slots, sizeof(um_slot));
    if (!t) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(m->slots);
    m->slots = t;
    m->mask = slots - 1;
    m->used = 0;
    return 0;
}

static int um_grow(UserMap *m) {
    size_t old_n = m->mask + 1, n = old_n * 2;
    um_slot *old = m->slots, *t = PyMem_Calloc(n, sizeof(um_slot));
    if (!t) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < old_n; i++) {
        if (!old[i].hash) continue;
        size_t j = (size_t)old[i].hash & (n - 1);
        while (t[j].hash) j = (j + 1) & (n - 1);
        t[j] = old[i];
    }
    PyMem_Free(old);
    m->slots = t;
    m->mask = n - 1;
    return 0;
}

/* Set key -> value (inserted at the end of the order when new); h: um_hash(key).
 * The key's slot, or NULL with an error raised. */
static um_slot *um_set_hashed(UserMap *m, const char *key, Py_ssize_t len, uint64_t h,
                              int64_t value) {
    if (len > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "UserMap: key too long");
        return NULL;
    }
    um_slot *s = um_find(m, key, len, h);
    if (s->hash) {
        s->value = value;
        return s;
    }
    if ((size_t)(m->used + 1) * 2 > m->mask + 1) { /* load at most 1/2 */
        if (um_grow(m) < 0) return NULL;
        s = um_find(m, key, len, h);
    }
    if (len > UM_INLINE) {
        if (m->alen + (size_t)len > m->acap) {
            size_t cap = m->acap ? m->acap : 65536;
            while (cap < m->alen + (size_t)len) cap *= 2;
            char *a = PyMem_Realloc(m->arena, cap);
            if (!a) {
                PyErr_NoMemory();
                return NULL;
            }
            m->arena = a;
            m->acap = cap;
        }
        memcpy(m->arena + m->alen, key, (size_t)len);
        s->k.off = m->alen;
        m->alen += (size_t)len;
    } else {
        memcpy(s->k.in, key, (size_t)len);
    }
    s->hash = h;
    s->len = (uint32_t)len;
    s->value = value;
    s->seq = m->seq++;
    m->used++;
    return s;
}

static inline int um_set(UserMap *m, const char *key, Py_ssize_t len, int64_t value) {
    return um_set_hashed(m, key, len, um_hash(key, len), value) ? 0 : -1;
}

static int um_reset(UserMap *m) {
    PyMem_Free(m->arena);
    m->arena = NULL;
    m->alen = m->acap = 0;
    m->seq = 0;
    return um_alloc(m, UM_MIN_SLOTS);
}

static const char *um_key_of(PyObject *key, Py_ssize_t *len) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "UserMap keys are str");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(key, len);
}

static PyObject *UserMap_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "UserMap() takes no arguments");
        return NULL;
    }
    UserMap *m = (UserMap *)type->tp_alloc(type, 0);
    if (!m) return NULL;
    if (um_reset(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

static void UserMap_dealloc(UserMap *m) {
    PyMem_Free(m->slots);
    PyMem_Free(m->arena);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static Py_ssize_t UserMap_len(UserMap *m) { return m->used; }

static PyObject *UserMap_getitem(UserMap *m, PyObject *key) {
    Py_ssize_t len;
    const char *k = um_key_of(key, &len);
    if (!k) return NULL;
    um_slot *s = um_get(m, k, len);
    if (!s) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return PyLong_FromLongLong(s->value);
}

static int UserMap_setitem(UserMap *m, PyObject *key, PyObject *value) {
    if (!value) {
        PyErr_SetString(PyExc_TypeError, "UserMap: no deletion (clear or keep_newest)");
        return -1;
    }
    Py_ssize_t len;
    const char *k = um_key_of(key, &len);
    if (!k) return -1;
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    return um_set(m, k, len, v);
}

static int UserMap_contains(UserMap *m, PyObject *key) {
    if (!PyUnicode_Check(key)) return 0;
    Py_ssize_t len;
    const char *k = PyUnicode_AsUTF8AndSize(key, &len);
    if (!k) return -1;
    return um_get(m, k, len) != NULL;
}

static PyObject *UserMap_get(UserMap *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    if (!PyUnicode_Check(args[0])) return Py_NewRef(dflt);
    Py_ssize_t len;
    const char *k = PyUnicode_AsUTF8AndSize(args[0], &len);
    if (!k) return NULL;
    um_slot *s = um_get(m, k, len);
    return s ? PyLong_FromLongLong(s->value) : Py_NewRef(dflt);
}

/* A value: an int, or the decimal digits of one as str or bytes (the numbers Redis
 * replies with). */
static int um_value_of(PyObject *v, int64_t *out) {
    if (PyLong_Check(v)) {
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred()) return -1;
        *out = x;
        return 0;
    }
    const char *s;
    Py_ssize_t n;
    if (PyBytes_Check(v)) {
        s = PyBytes_AS_STRING(v);
        n = PyBytes_GET_SIZE(v);
    } else if (!(s = PyUnicode_Check(v) ? PyUnicode_AsUTF8AndSize(v, &n) : NULL)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "UserMap values are int");
        return -1;
    }
    if (n < 1 || n > 18) goto bad;
    int64_t x = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') goto bad;
        x = x * 10 + (s[i] - '0');
    }
    *out = x;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "UserMap: a value is not a decimal");
    return -1;
}

/* update(dict), in blocks: the slots of a block are fetched from memory together
 * (prefetched once their keys are hashed), not one cache miss after the other. */
static PyObject *UserMap_update(UserMap *m, PyObject *other) {
    if (!PyDict_Check(other)) {
        PyErr_SetString(PyExc_TypeError, "UserMap.update: a dict");
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    const char *keys[UM_BLOCK];
    Py_ssize_t lens[UM_BLOCK];
    uint64_t hs[UM_BLOCK];
    int64_t vals[UM_BLOCK];
    int more = 1;
    while (more) {
        int c = 0;
        while (c < UM_BLOCK && (more = PyDict_Next(other, &pos, &k, &v))) {
            if (!(keys[c] = um_key_of(k, &lens[c])) || um_value_of(v, &vals[c]) < 0)
                return NULL;
            hs[c] = um_hash(keys[c], lens[c]);
            __builtin_prefetch(&m->slots[hs[c] & m->mask]);
            c++;
        }
        for (int j = 0; j < c; j++)
            if (!um_set_hashed(m, keys[j], lens[j], hs[j], vals[j])) return NULL;
    }
    Py_RETURN_NONE;
}

/* add_flat([key, value, key, value, ...]) -> the highest value added (-1: none).
 * Keys str or bytes (UTF-8), values int or decimal str or bytes: a script's reply as the
 * client gives it, with no str made per key. */
static PyObject *UserMap_add_flat(UserMap *m, PyObject *flat) {
    if (!PyList_Check(flat) || PyList_GET_SIZE(flat) % 2) {
        PyErr_SetString(PyExc_TypeError, "UserMap.add_flat: a list of key, value pairs");
        return NULL;
    }
    int64_t top = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(flat); i += 2) {
        PyObject *key = PyList_GET_ITEM(flat, i), *value = PyList_GET_ITEM(flat, i + 1);
        const char *k;
        Py_ssize_t len;
        if (PyBytes_Check(key)) {
            k = PyBytes_AS_STRING(key);
            len = PyBytes_GET_SIZE(key);
        } else if (!(k = um_key_of(key, &len))) {
            return NULL;
        }
        int64_t v;
        if (um_value_of(value, &v) < 0 || um_set(m, k, len, v) < 0) return NULL;
        if (v > top) top = v;
    }
    return PyLong_FromLongLong(top);
}

/* clear(): every entry goes, the table's size stays. A cache cleared when it reaches
 * its limit fills up to it again: growing back from the smallest size would move every
 * entry again at each doubling. */
static PyObject *UserMap_clear(UserMap *m, PyObject *unused) {
    memset(m->slots, 0, (m->mask + 1) * sizeof(um_slot));
    m->used = 0;
    m->alen = 0;
    m->seq = 0;
    Py_RETURN_NONE;
}

static int cmp_u32_desc(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x < y) - (x > y);
}

/* keep_newest(n): keep the n entries inserted last, drop the others (as deleting a
 * dict's first keys would). */
static PyObject *UserMap_keep_newest(UserMap *m, PyObject *arg) {
    Py_ssize_t keep = PyLong_AsSsize_t(arg);
    if (keep == -1 && PyErr_Occurred()) return NULL;
    if (keep < 0) keep = 0;
    if (keep >= m->used) Py_RETURN_NONE;
    size_t n = m->mask + 1;
    uint32_t *seqs = PyMem_Malloc((size_t)(m->used ? m->used : 1) * sizeof(uint32_t));
    if (!seqs) return PyErr_NoMemory();
    Py_ssize_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (m->slots[i].hash) seqs[c++] = m->slots[i].seq;
    uint32_t floor = 0; /* the oldest seq kept */
    int none = keep == 0;
    if (!none) {
        qsort(seqs, (size_t)c, sizeof(uint32_t), cmp_u32_desc);
        floor = seqs[keep - 1];
    }
    PyMem_Free(seqs);
    um_slot *old = m->slots;
    char *old_arena = m->arena;
    size_t old_alen = m->alen, old_acap = m->acap;
    m->slots = NULL;
    m->arena = NULL;
    m->alen = m->acap = 0;
    size_t want = UM_MIN_SLOTS;
    while (want < (size_t)keep * 2 + 2) want *= 2;
    if (um_alloc(m, want) < 0) {
        m->slots = old; /* unchanged */
        m->arena = old_arena;
        m->alen = old_alen;
        m->acap = old_acap;
        return NULL;
    }
    uint32_t next_seq = m->seq;
    for (size_t i = 0; i < n && !none; i++) {
        um_slot *s = &old[i];
        if (!s->hash || s->seq < floor) continue;
        um_slot *t = um_set_hashed(m, um_slot_key(s, old_arena), s->len, s->hash, s->value);
        if (!t) {
            PyMem_Free(old);
            PyMem_Free(old_arena);
            return NULL;
        }
        t->seq = s->seq;
    }
    m->seq = next_seq;
    PyMem_Free(old);
    PyMem_Free(old_arena);
    Py_RETURN_NONE;
}

static PyMappingMethods UserMap_as_mapping = {
    (lenfunc)UserMap_len, (binaryfunc)UserMap_getitem, (objobjargproc)UserMap_setitem};

static PySequenceMethods UserMap_as_sequence = {
    .sq_contains = (objobjproc)UserMap_contains,
};

static PyMethodDef UserMap_methods[] = {
    {"get", (PyCFunction)(void (*)(void))UserMap_get, METH_FASTCALL,
     "get(key, default=None): the key's value, or default."},
    {"update", (PyCFunction)UserMap_update, METH_O,
     "update(dict): its entries, values int or decimal str or bytes."},
    {"add_flat", (PyCFunction)UserMap_add_flat, METH_O,
     "add_flat([key, value, ...]) -> the highest value added (-1: none)."},
    {"clear", (PyCFunction)UserMap_clear, METH_NOARGS,
     "Remove every entry (the table keeps its size)."},
    {"keep_newest", (PyCFunction)UserMap_keep_newest, METH_O,
     "keep_newest(n): keep the n entries inserted last."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject UserMapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "stream._fastfold.UserMap",
    .tp_basicsize = sizeof(UserMap),
    .tp_dealloc = (destructor)UserMap_dealloc,
    .tp_as_mapping = &UserMap_as_mapping,
    .tp_as_sequence = &UserMap_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "user id (str) -> int, a compact table for the worker's per-user caches",
    .tp_methods = UserMap_methods,
    .tp_new = UserMap_new,
};

/* split_known(users, numbers) -> (known, missing): per user of the list, in order, its
 * number (numbers: a UserMap or a dict) appended to `known`, or the user to `missing`. */
static PyObject *split_known(PyObject *self, PyObject *args) {
    PyObject *users, *numbers;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &users, &numbers)) return NULL;
    int is_map = Py_IS_TYPE(numbers, &UserMapType);
    if (!is_map && !PyDict_Check(numbers)) {
        PyErr_SetString(PyExc_TypeError, "split_known: numbers is a UserMap or a dict");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(users);
    PyObject *known = PyList_New(0), *missing = PyList_New(0);
    if (!known || !missing) goto fail;
    const char *keys[UM_BLOCK];
    Py_ssize_t lens[UM_BLOCK];
    uint64_t hs[UM_BLOCK];
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *user = PyList_GET_ITEM(users, i);
        if (is_map) {
            /* in blocks, the block's slots prefetched (see UserMap_update) */
            const UserMap *m = (UserMap *)numbers;
            const int j = (int)(i % UM_BLOCK);
            if (j == 0) {
                for (Py_ssize_t b = i; b < count && b < i + UM_BLOCK; b++) {
                    const int q = (int)(b - i);
                    if (!(keys[q] = um_key_of(PyList_GET_ITEM(users, b), &lens[q])))
                        goto fail;
                    hs[q] = um_hash(keys[q], lens[q]);
                    __builtin_prefetch(&m->slots[hs[q] & m->mask]);
                }
            }
            const um_slot *s = um_find(m, keys[j], lens[j], hs[j]);
            if (s->hash) {
                PyObject *n = PyLong_FromLongLong(s->value);
                if (!n) goto fail;
                int r = PyList_Append(known, n);
                Py_DECREF(n);
                if (r < 0) goto fail;
            } else if (PyList_Append(missing, user) < 0) {
                goto fail;
            }
            continue;
        }
        PyObject *n = PyDict_GetItemWithError(numbers, user);
        if (n) {
            if (PyList_Append(known, n) < 0) goto fail;
        } else if (PyErr_Occurred() || PyList_Append(missing, user) < 0) {
            goto fail;
        }
    }
    return Py_BuildValue("(NN)", known, missing);
fail:
    Py_XDECREF(known);
    Py_XDECREF(missing);
    return NULL;
}

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* fold_activity(values, offsets, start, stop, ceiling, ctx[, shape]) -> (taken, leftovers,
 *                                                                     late)
 *
 * shape: 0 (default) section-1 activity events, 1 Segment calls (see parse_segment_track)
 * values/offsets: the batch's lists; [start, stop) one partition's run of them.
 * ceiling: messages at or below this offset are left to the Python path (its exact
 *          per-shard redelivery check).
 * ctx: (now_ms, lateness_ms, shards, utc, slot_cache, day_of, oldest_hll_day,
 *       oldest_bit_day, seen, hll, activities, new_days[, today[, id_cache, hasher]])
 *       seen: a UserMap or a dict; activities: per shard, the plan's `activity` dict;
 *       id_cache and hasher: see the top of this file.
 * Returns a list of messages taken per shard, the indices left to Python, and per shard
 * a list of the messages taken that were 1, 2-7, 8-30 and 31+ days before `today`
 * (all 0 without `today`). */
/* A message parsed, not yet folded: taken here (ok) with its user and time, and the
 * user's UserMap hash when its `seen` slot was prefetched. */
typedef struct {
    int ok;
    span user;
    int64_t ts;
    uint64_t kh;
} parsed_msg;

#define AHEAD 8

/* Parse message i into *out (out->ok: taken by the shortcut); -1 on an error raised. */
static inline int parse_one(PyObject *values, PyObject *offsets, Py_ssize_t i,
                            long long ceiling, int shape, int64_t oldest_ms,
                            int64_t newest_ms, parsed_msg *out) {
    PyObject *value = PyList_GET_ITEM(values, i);
    long long offset = PyLong_AsLongLong(PyList_GET_ITEM(offsets, i));
    if (offset == -1 && PyErr_Occurred()) return -1;
    out->user.p = NULL;
    out->user.n = 0;
    out->ts = 0;
    out->kh = 0;
    out->ok = !(offset <= ceiling || !PyBytes_Check(value) ||
                !(shape == 1 ? parse_segment_track(PyBytes_AS_STRING(value),
                                                   PyBytes_GET_SIZE(value), &out->user,
                                                   &out->ts)
                             : parse_activity(PyBytes_AS_STRING(value),
                                              PyBytes_GET_SIZE(value), &out->user,
                                              &out->ts)) ||
                out->ts < oldest_ms || out->ts > newest_ms);
    return 0;
}

#define LATE_BUCKETS 4
#define DAY_SLOTS 64
static inline int late_bucket(long long age) {
    if (age < 1) return -1;
    if (age == 1) return 0;
    if (age <= 7) return 1;
    if (age <= 30) return 2;
    return 3;
}

static PyObject *fold_activity(PyObject *self, PyObject *args) {
    PyObject *values, *offsets, *ctx;
    Py_ssize_t start, stop;
    long long ceiling;
    int shape = 0;
    if (!PyArg_ParseTuple(args, "O!O!nnLO!|i", &PyList_Type, &values, &PyList_Type, &offsets,
                          &start, &stop, &ceiling, &PyTuple_Type, &ctx, &shape))
        return NULL;
    long long now_ms, lateness_ms, oldest_hll, oldest_bit, today = LLONG_MIN;
    long shards;
    int utc;
    PyObject *slot_cache, *day_of, *seen, *hll, *activities, *new_days;
    PyObject *id_cache = NULL, *hasher = NULL;
    if (!PyArg_ParseTuple(ctx, "LLlpO!OLLOO!O!O!|LO!O", &now_ms, &lateness_ms, &shards, &utc,
                          &PyDict_Type, &slot_cache, &day_of, &oldest_hll, &oldest_bit,
                          &seen, &PyDict_Type, &hll, &PyList_Type,
                          &activities, &PyDict_Type, &new_days, &today, &PyDict_Type,
                          &id_cache, &hasher))
        return NULL;
    /* seen: a UserMap (looked up by the user's bytes, before any str is made) or a dict */
    UserMap *seen_map = Py_IS_TYPE(seen, &UserMapType) ? (UserMap *)seen : NULL;
    if (!seen_map && !PyDict_Check(seen)) {
        PyErr_SetString(PyExc_TypeError, "fold_activity: seen is a UserMap or a dict");
        return NULL;
    }
    if (start < 0 || stop > PyList_GET_SIZE(values) || stop > PyList_GET_SIZE(offsets) ||
        shards < 1 || PyList_GET_SIZE(activities) != shards) {
        PyErr_SetString(PyExc_ValueError, "fold_activity: inconsistent arguments");
        return NULL;
    }
    const int64_t oldest_ms = now_ms - lateness_ms, newest_ms = now_ms + MAX_FUTURE_MS;
    PyObject *left = PyList_New(0);
    PyObject *taken = PyList_New(shards);
    PyObject *late = PyList_New(shards);
    if (!left || !taken || !late) goto fail;
    /* per shard: messages taken, then the LATE_BUCKETS late counts */
    long long *counts = PyMem_Calloc((size_t)shards * (1 + LATE_BUCKETS), sizeof(long long));
    if (!counts) goto fail;
    /* The days met, by day % DAY_SLOTS: each one's int object, HyperLogLog set and per
     * shard activity list. A message of a day met before (most: a batch's times span a
     * day when in order, 30 when shuffled) saves an int allocation and two dict lookups.
     * Borrowed from the dicts that hold them (nothing here removes an entry), except the
     * int objects, owned. */
    int64_t slot_day[DAY_SLOTS];
    PyObject *slot_obj[DAY_SLOTS] = {NULL}, *slot_members[DAY_SLOTS] = {NULL};
    for (int k = 0; k < DAY_SLOTS; k++) slot_day[k] = INT64_MIN;
    PyObject **slot_lists = PyMem_Calloc((size_t)shards * DAY_SLOTS, sizeof(PyObject *));
    if (!slot_lists) goto fail_counts;
    /* 1. Messages are parsed AHEAD positions before they are folded, and with a
     *    UserMap `seen` (and no keyed hash, which only a Python call makes) the user's
     *    slot is prefetched then: by the time the message is folded, the slot is in the
     *    cache. ring[(k - start) % AHEAD] holds message k, for k in [i, parsed_to). */
    parsed_msg ring[AHEAD];
    const int prefetch = seen_map != NULL && hasher == NULL;
    Py_ssize_t parsed_to = start;
    for (Py_ssize_t i = start; i < stop; i++) {
        if ((i - start) % 512 == 511) {
            /* A moment for other threads: the worker's Redis thread waits for the GIL to
             * go on, and a whole batch here takes milliseconds. */
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
        }
        for (; parsed_to < stop && parsed_to < i + AHEAD; parsed_to++) {
            parsed_msg *pm = &ring[(parsed_to - start) % AHEAD];
            if (parse_one(values, offsets, parsed_to, ceiling, shape, oldest_ms, newest_ms,
                          pm) < 0)
                goto fail_counts;
            if (prefetch && pm->ok) {
                pm->kh = um_hash(pm->user.p, pm->user.n);
                __builtin_prefetch(&seen_map->slots[pm->kh & seen_map->mask]);
            }
        }
        /* 2. Fold message i. */
        const parsed_msg parsed = ring[(i - start) % AHEAD];
        span user = parsed.user;
        int64_t ts = parsed.ts;
        if (!parsed.ok) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (!idx || PyList_Append(left, idx) < 0) {
                Py_XDECREF(idx);
                goto fail_counts;
            }
            Py_DECREF(idx);
            continue;
        }
        PyObject *hu = NULL; /* the user's keyed hash (a new reference), with a key */
        if (hasher) {
            PyObject *raw = PyUnicode_FromStringAndSize(user.p, user.n);
            if (!raw) goto fail_counts;
            hu = PyDict_GetItemWithError(id_cache, raw);
            if (hu) {
                Py_INCREF(hu);
            } else if (!PyErr_Occurred()) {
                hu = PyObject_CallOneArg(hasher, raw);
            }
            Py_DECREF(raw);
            if (!hu) goto fail_counts;
            Py_ssize_t hn;
            const char *hp = PyUnicode_Check(hu) ? PyUnicode_AsUTF8AndSize(hu, &hn) : NULL;
            if (!hp) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "fold_activity: hasher must return str");
                Py_DECREF(hu);
                goto fail_counts;
            }
            user.p = hp;
            user.n = hn;
        }
        uint32_t h = (uint32_t)crc32(0L, (const Bytef *)user.p, (uInt)user.n);
        long shard = (long)(h % (uint32_t)shards);
        counts[shard * (1 + LATE_BUCKETS)]++;
        int64_t day;
        if (utc) {
            day = floordiv(ts, DAY_MS);
        } else {
            PyObject *slot = PyLong_FromLongLong(floordiv(ts, SLOT_MS));
            if (!slot) goto fail_hashed;
            PyObject *d = PyDict_GetItemWithError(slot_cache, slot);
            Py_DECREF(slot);
            if (d) {
                day = PyLong_AsLongLong(d);
            } else {
                if (PyErr_Occurred()) goto fail_hashed;
                PyObject *r = PyObject_CallFunction(day_of, "L", (long long)ts);
                if (!r) goto fail_hashed;
                day = PyLong_AsLongLong(r);
                Py_DECREF(r);
            }
            if (day == -1 && PyErr_Occurred()) goto fail_hashed;
        }
        if (today != LLONG_MIN) {
            int bucket = late_bucket(today - (long long)day);
            if (bucket >= 0) counts[shard * (1 + LATE_BUCKETS) + 1 + bucket]++;
        }
        if (seen_map) {
            /* a (user, day) known to be in Redis: nothing to write, no str made */
            const um_slot *s = um_find(seen_map, user.p, user.n,
                                       prefetch ? parsed.kh : um_hash(user.p, user.n));
            if (s->hash && s->value == day) {
                Py_XDECREF(hu);
                continue;
            }
        }
        PyObject *u = hu ? hu : PyUnicode_FromStringAndSize(user.p, user.n);
        if (!u) goto fail_counts;
        const int ds = (int)(((uint64_t)day) % DAY_SLOTS);
        PyObject **cur_lists = slot_lists + (size_t)ds * (size_t)shards;
        if (slot_day[ds] != day) {
            PyObject *d = PyLong_FromLongLong(day);
            if (!d) {
                Py_DECREF(u);
                goto fail_counts;
            }
            Py_XSETREF(slot_obj[ds], d);
            slot_day[ds] = day;
            slot_members[ds] = NULL;
            memset(cur_lists, 0, (size_t)shards * sizeof(PyObject *));
        }
        PyObject *dayobj = slot_obj[ds];
        Py_INCREF(dayobj);
        PyObject *known = seen_map ? NULL : PyDict_GetItemWithError(seen, u);
        if (known) {
            long long kd = PyLong_AsLongLong(known);
            if (kd == -1 && PyErr_Occurred()) goto fail_item;
            if (kd == day) goto next;
        } else if (PyErr_Occurred()) {
            goto fail_item;
        }
        if (day >= oldest_hll) {
            PyObject *members = slot_members[ds];
            if (!members) {
                members = PyDict_GetItemWithError(hll, dayobj);
                if (!members) {
                    if (PyErr_Occurred()) goto fail_item;
                    members = PySet_New(NULL);
                    if (!members || PyDict_SetItem(hll, dayobj, members) < 0) {
                        Py_XDECREF(members);
                        goto fail_item;
                    }
                    Py_DECREF(members);  /* the dict holds it */
                } else if (!PySet_Check(members)) {
                    PyErr_SetString(PyExc_TypeError, "fold_activity: hll values must be sets");
                    goto fail_item;
                }
                slot_members[ds] = members;
            }
            /* One hash lookup, not a test and then an add: a user the set held already
             * leaves its size unchanged (the pair is in this batch). */
            Py_ssize_t had = PySet_GET_SIZE(members);
            if (PySet_Add(members, u) < 0) goto fail_item;
            if (PySet_GET_SIZE(members) == had) goto next;
        }
        if (day > oldest_bit) {
            PyObject *list = cur_lists[shard];
            if (!list) {
                PyObject *act = PyList_GET_ITEM(activities, shard);
                list = PyDict_GetItemWithError(act, dayobj);
                if (!list) {
                    if (PyErr_Occurred()) goto fail_item;
                    list = PyList_New(0);
                    if (!list || PyDict_SetItem(act, dayobj, list) < 0) {
                        Py_XDECREF(list);
                        goto fail_item;
                    }
                    Py_DECREF(list);  /* the dict holds it */
                }
                cur_lists[shard] = list;
            }
            if (PyList_Append(list, u) < 0) goto fail_item;
        }
        /* new_days[u] = max(new_days.get(u), day), one lookup when u is new to it */
        PyObject *latest = PyDict_SetDefault(new_days, u, dayobj);
        if (!latest) goto fail_item;
        if (latest != dayobj) {
            long long ld = PyLong_AsLongLong(latest);
            if (ld == -1 && PyErr_Occurred()) goto fail_item;
            if (ld < day && PyDict_SetItem(new_days, u, dayobj) < 0) goto fail_item;
        }
    next:
        Py_DECREF(u);
        Py_DECREF(dayobj);
        continue;
    fail_item:
        Py_XDECREF(u);
        Py_XDECREF(dayobj);
        goto fail_counts;
    fail_hashed:
        Py_XDECREF(hu);
        goto fail_counts;
    }
    for (int k = 0; k < DAY_SLOTS; k++) Py_CLEAR(slot_obj[k]);
    PyMem_Free(slot_lists);
    slot_lists = NULL;
    for (long s = 0; s < shards; s++) {
        const long long *at = counts + s * (1 + LATE_BUCKETS);
        PyObject *c = PyLong_FromLongLong(at[0]);
        if (!c) goto fail_counts;
        PyList_SET_ITEM(taken, s, c);
        PyObject *l = Py_BuildValue("[LLLL]", at[1], at[2], at[3], at[4]);
        if (!l) goto fail_counts;
        PyList_SET_ITEM(late, s, l);
    }
    PyMem_Free(counts);
    PyObject *result = PyTuple_Pack(3, taken, left, late);
    Py_DECREF(taken);
    Py_DECREF(left);
    Py_DECREF(late);
    return result;
fail_counts:
    for (int k = 0; k < DAY_SLOTS; k++) Py_XDECREF(slot_obj[k]);
    PyMem_Free(slot_lists);
    PyMem_Free(counts);
fail:
    Py_XDECREF(left);
    Py_XDECREF(taken);
    Py_XDECREF(late);
    return NULL;
}

static PyMethodDef methods[] = {
    {"fold_activity", fold_activity, METH_VARARGS,
     "Fold the plain activity messages of one partition's run; see the module source."},
    {"split_known", split_known, METH_VARARGS,
     "(known numbers, users without one) of a list of users and a UserMap or dict."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastfold",
    "Compiled decode and fold of plain activity messages (optional; decode.py and fold.py "
    "are the definition).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__fastfold(void) {
    init_stop_bytes();
    if (PyType_Ready(&UserMapType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (!mod) return NULL;
    if (PyModule_AddObjectRef(mod, "UserMap", (PyObject *)&UserMapType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
