/* _fastfold.c: the fold of plain `activity` messages, compiled.
 *
 * The pure Python path (events.decode_batch -> fold.fold) is the definition; this module
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
 * `new_days` (user -> the latest such day).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* fold_activity(values, offsets, start, stop, ceiling, ctx) -> (taken, leftovers)
 *
 * values/offsets: the batch's lists; [start, stop) one partition's run of them.
 * ceiling: messages at or below this offset are left to the Python path (its exact
 *          per-shard redelivery check).
 * ctx: (now_ms, lateness_ms, shards, utc, slot_cache, day_of, oldest_hll_day,
 *       oldest_bit_day, seen, hll, activities, new_days)
 *       activities: per shard, the plan's `activity` dict.
 * Returns a list of messages taken per shard, and the indices left to Python. */
static PyObject *fold_activity(PyObject *self, PyObject *args) {
    PyObject *values, *offsets, *ctx;
    Py_ssize_t start, stop;
    long long ceiling;
    if (!PyArg_ParseTuple(args, "O!O!nnLO!", &PyList_Type, &values, &PyList_Type, &offsets,
                          &start, &stop, &ceiling, &PyTuple_Type, &ctx))
        return NULL;
    long long now_ms, lateness_ms, oldest_hll, oldest_bit;
    long shards;
    int utc;
    PyObject *slot_cache, *day_of, *seen, *hll, *activities, *new_days;
    if (!PyArg_ParseTuple(ctx, "LLlpO!OLLO!O!O!O!", &now_ms, &lateness_ms, &shards, &utc,
                          &PyDict_Type, &slot_cache, &day_of, &oldest_hll, &oldest_bit,
                          &PyDict_Type, &seen, &PyDict_Type, &hll, &PyList_Type,
                          &activities, &PyDict_Type, &new_days))
        return NULL;
    if (start < 0 || stop > PyList_GET_SIZE(values) || stop > PyList_GET_SIZE(offsets) ||
        shards < 1 || PyList_GET_SIZE(activities) != shards) {
        PyErr_SetString(PyExc_ValueError, "fold_activity: inconsistent arguments");
        return NULL;
    }
    const int64_t oldest_ms = now_ms - lateness_ms, newest_ms = now_ms + MAX_FUTURE_MS;
    PyObject *left = PyList_New(0);
    PyObject *taken = PyList_New(shards);
    if (!left || !taken) goto fail;
    long long *counts = PyMem_Calloc((size_t)shards, sizeof(long long));
    if (!counts) goto fail;
    /* the last day's set and list, as consecutive messages are mostly of the same day */
    for (Py_ssize_t i = start; i < stop; i++) {
        if ((i - start) % 512 == 511) {
            /* A moment for other threads: the worker's Redis thread waits for the GIL to
             * go on, and a whole batch here takes milliseconds. */
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
        }
        PyObject *value = PyList_GET_ITEM(values, i);
        long long offset = PyLong_AsLongLong(PyList_GET_ITEM(offsets, i));
        if (offset == -1 && PyErr_Occurred()) goto fail_counts;
        span user = {NULL, 0};
        int64_t ts = 0;
        if (offset <= ceiling || !PyBytes_Check(value) ||
            !parse_activity(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &user, &ts) ||
            ts < oldest_ms || ts > newest_ms) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (!idx || PyList_Append(left, idx) < 0) {
                Py_XDECREF(idx);
                goto fail_counts;
            }
            Py_DECREF(idx);
            continue;
        }
        uint32_t h = (uint32_t)crc32(0L, (const Bytef *)user.p, (uInt)user.n);
        long shard = (long)(h % (uint32_t)shards);
        counts[shard]++;
        int64_t day;
        if (utc) {
            day = floordiv(ts, DAY_MS);
        } else {
            PyObject *slot = PyLong_FromLongLong(floordiv(ts, SLOT_MS));
            if (!slot) goto fail_counts;
            PyObject *d = PyDict_GetItemWithError(slot_cache, slot);
            Py_DECREF(slot);
            if (d) {
                day = PyLong_AsLongLong(d);
            } else {
                if (PyErr_Occurred()) goto fail_counts;
                PyObject *r = PyObject_CallFunction(day_of, "L", (long long)ts);
                if (!r) goto fail_counts;
                day = PyLong_AsLongLong(r);
                Py_DECREF(r);
            }
            if (day == -1 && PyErr_Occurred()) goto fail_counts;
        }
        PyObject *u = PyUnicode_FromStringAndSize(user.p, user.n);
        PyObject *dayobj = u ? PyLong_FromLongLong(day) : NULL;
        if (!dayobj) goto fail_item;
        PyObject *known = PyDict_GetItemWithError(seen, u);
        if (known) {
            long long kd = PyLong_AsLongLong(known);
            if (kd == -1 && PyErr_Occurred()) goto fail_item;
            if (kd == day) goto next;
        } else if (PyErr_Occurred()) {
            goto fail_item;
        }
        if (day >= oldest_hll) {
            PyObject *members = PyDict_GetItemWithError(hll, dayobj);
            if (!members) {
                if (PyErr_Occurred()) goto fail_item;
                members = PySet_New(NULL);
                if (!members || PyDict_SetItem(hll, dayobj, members) < 0) {
                    Py_XDECREF(members);
                    goto fail_item;
                }
                Py_DECREF(members);
            } else {
                int in = PySet_Contains(members, u);
                if (in < 0) goto fail_item;
                if (in) goto next;
            }
            if (PySet_Add(members, u) < 0) goto fail_item;
        }
        if (day > oldest_bit) {
            PyObject *act = PyList_GET_ITEM(activities, shard);
            PyObject *list = PyDict_GetItemWithError(act, dayobj);
            if (!list) {
                if (PyErr_Occurred()) goto fail_item;
                list = PyList_New(0);
                if (!list || PyDict_SetItem(act, dayobj, list) < 0) {
                    Py_XDECREF(list);
                    goto fail_item;
                }
                Py_DECREF(list);
            }
            if (PyList_Append(list, u) < 0) goto fail_item;
        }
        PyObject *latest = PyDict_GetItemWithError(new_days, u);
        if (!latest && PyErr_Occurred()) goto fail_item;
        if (!latest || PyLong_AsLongLong(latest) < day) {
            if (PyErr_Occurred() || PyDict_SetItem(new_days, u, dayobj) < 0) goto fail_item;
        }
    next:
        Py_DECREF(u);
        Py_DECREF(dayobj);
        continue;
    fail_item:
        Py_XDECREF(u);
        Py_XDECREF(dayobj);
        goto fail_counts;
    }
    for (long s = 0; s < shards; s++) {
        PyObject *c = PyLong_FromLongLong(counts[s]);
        if (!c) goto fail_counts;
        PyList_SET_ITEM(taken, s, c);
    }
    PyMem_Free(counts);
    PyObject *result = PyTuple_Pack(2, taken, left);
    Py_DECREF(taken);
    Py_DECREF(left);
    return result;
fail_counts:
    PyMem_Free(counts);
fail:
    Py_XDECREF(left);
    Py_XDECREF(taken);
    return NULL;
}

static PyMethodDef methods[] = {
    {"fold_activity", fold_activity, METH_VARARGS,
     "Fold the plain activity messages of one partition's run; see the module source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastfold",
    "Compiled fold of plain activity messages (optional; fold.py is the definition).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__fastfold(void) { return PyModule_Create(&module); }
