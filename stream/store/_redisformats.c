/* _redisformats.c: values built by the worker in Redis's own formats, so Redis merges
 * a whole batch with one command instead of taking it apart member by member.
 *
 * hll_dense(members) -> bytes
 *     A HyperLogLog in Redis's dense encoding holding `members` (str, as UTF-8): what
 *     PFADD of them into an empty key would hold, promoted to dense. Redis's
 *     hyperloglog.c defines it: 16384 registers of 6 bits; a member's register is the
 *     low 14 bits of MurmurHash64A(member, seed 0xadc83b19) and its value the position
 *     of the lowest set bit of the other 50 (1-based, at most 51); registers packed
 *     little-endian-first into 12288 bytes after a 16-byte header ("HYLL", encoding 0,
 *     three unused bytes, a cached cardinality marked stale). PFMERGE of it into a key
 *     sets the same registers PFADD of the members would; tests check it byte for byte
 *     against a real Redis.
 *
 * bitmap(numbers) -> (first_byte, bytes)
 *     Bits `numbers` (decimal str or int, >= 0) set in Redis's bit order (bit n is bit
 *     7 - n % 8 of byte n / 8, as SETBIT), as the bytes from the lowest number's byte to
 *     the highest's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HLL_P 14
#define HLL_Q (64 - HLL_P)
#define HLL_REGISTERS (1 << HLL_P)
#define HLL_BITS 6
#define HLL_HDR_SIZE 16
#define HLL_DENSE_SIZE (HLL_HDR_SIZE + (HLL_REGISTERS * HLL_BITS + 7) / 8)

static uint64_t murmur64a(const unsigned char *data, Py_ssize_t len, uint64_t seed) {
    const uint64_t m = 0xc6a4a7935bd1e995ULL;
    const int r = 47;
    uint64_t h = seed ^ ((uint64_t)len * m);
    const unsigned char *end = data + (len - (len & 7));
    while (data != end) {
        uint64_t k;
        memcpy(&k, data, 8); /* Redis reads little-endian words (it only builds on LE here) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        k = __builtin_bswap64(k);
#endif
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
        data += 8;
    }
    switch (len & 7) {
    case 7: h ^= (uint64_t)data[6] << 48; /* fall through */
    case 6: h ^= (uint64_t)data[5] << 40; /* fall through */
    case 5: h ^= (uint64_t)data[4] << 32; /* fall through */
    case 4: h ^= (uint64_t)data[3] << 24; /* fall through */
    case 3: h ^= (uint64_t)data[2] << 16; /* fall through */
    case 2: h ^= (uint64_t)data[1] << 8; /* fall through */
    case 1:
        h ^= (uint64_t)data[0];
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

static PyObject *hll_dense(PyObject *self, PyObject *members) {
    PyObject *it = PyObject_GetIter(members);
    if (!it) return NULL;
    uint8_t *regs = PyMem_Calloc(HLL_REGISTERS, 1);
    if (!regs) {
        Py_DECREF(it);
        return PyErr_NoMemory();
    }
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(item, &len);
        Py_DECREF(item);
        if (!s) goto fail;
        uint64_t hash = murmur64a((const unsigned char *)s, len, 0xadc83b19ULL);
        uint64_t index = hash & (HLL_REGISTERS - 1);
        hash >>= HLL_P;
        hash |= (uint64_t)1 << HLL_Q; /* so the count is at most Q + 1 */
        uint8_t count = (uint8_t)(__builtin_ctzll(hash) + 1);
        if (count > regs[index]) regs[index] = count;
    }
    if (PyErr_Occurred()) goto fail;
    Py_DECREF(it);
    PyObject *out = PyBytes_FromStringAndSize(NULL, HLL_DENSE_SIZE);
    if (!out) {
        PyMem_Free(regs);
        return NULL;
    }
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    memset(p, 0, HLL_DENSE_SIZE);
    memcpy(p, "HYLL", 4);
    p[15] = 0x80; /* cached cardinality: stale */
    uint8_t *r = p + HLL_HDR_SIZE;
    for (long i = 0; i < HLL_REGISTERS; i++) {
        unsigned long bit = (unsigned long)i * HLL_BITS;
        unsigned long byte = bit / 8, fb = bit & 7;
        unsigned long v = regs[i];
        r[byte] |= (uint8_t)(v << fb);
        if (fb > 2) r[byte + 1] |= (uint8_t)(v >> (8 - fb)); /* spills into the next */
    }
    PyMem_Free(regs);
    return out;
fail:
    Py_DECREF(it);
    PyMem_Free(regs);
    return NULL;
}

static int number_of(PyObject *item, long long *n) {
    if (PyLong_Check(item)) {
        *n = PyLong_AsLongLong(item);
        if (*n == -1 && PyErr_Occurred()) return 0;
    } else {
        Py_ssize_t len;
        const char *s = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : NULL;
        if (!s) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "bitmap: str or int");
            return 0;
        }
        long long v = 0;
        if (len < 1 || len > 18) goto bad;
        for (Py_ssize_t i = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') goto bad;
            v = v * 10 + (s[i] - '0');
        }
        *n = v;
    }
    if (*n < 0) goto bad;
    return 1;
bad:
    PyErr_SetString(PyExc_ValueError, "bitmap: a bit number is not a decimal >= 0");
    return 0;
}

static PyObject *bitmap(PyObject *self, PyObject *numbers) {
    PyObject *seq = PySequence_Fast(numbers, "bitmap: a sequence of numbers");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    long long *ns = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(long long));
    if (!ns) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    long long lo = -1, hi = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!number_of(items[i], &ns[i])) {
            PyMem_Free(ns);
            Py_DECREF(seq);
            return NULL;
        }
        if (lo < 0 || ns[i] < lo) lo = ns[i];
        if (ns[i] > hi) hi = ns[i];
    }
    Py_DECREF(seq);
    if (count == 0) {
        PyMem_Free(ns);
        return Py_BuildValue("(iy#)", 0, "", (Py_ssize_t)0);
    }
    const long long first = lo / 8, size = hi / 8 - first + 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!out) {
        PyMem_Free(ns);
        return NULL;
    }
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(out);
    memset(p, 0, (size_t)size);
    for (Py_ssize_t i = 0; i < count; i++) p[ns[i] / 8 - first] |= (uint8_t)(0x80 >> (ns[i] & 7));
    PyMem_Free(ns);
    PyObject *result = Py_BuildValue("(LN)", first, out);
    return result;
}

static PyMethodDef methods[] = {
    {"hll_dense", hll_dense, METH_O,
     "A dense Redis HyperLogLog of the given str members (bytes); see the source."},
    {"bitmap", bitmap, METH_O,
     "(first byte, bytes) with the given bit numbers set in Redis's bit order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_redisformats",
    "HyperLogLogs and bitmaps built in Redis's own formats (optional; see the source).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__redisformats(void) { return PyModule_Create(&module); }
