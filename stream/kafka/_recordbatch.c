/* _recordbatch.c: Kafka record batches (message format v2) read straight into lists.
 *
 * aiokafka reads a fetched partition one message at a time: a record object, a Python
 * generator step and a consumer record per message, a good part of the worker's time.
 * The worker needs only each message's offset and value, so this reads the raw bytes of
 * a fetch response's record set (the format of KIP-98, see Kafka's "Record Batch"
 * documentation) and appends them to two lists.
 *
 * It takes only what it can read exactly: uncompressed batches of magic 2. A compressed
 * batch is handed back once its CRC is checked (stream/fetched.py decompresses it and
 * reads the result here again), a malformed one is handed back as such (the worker
 * dead-letters it whole), and at a batch of an older magic aiokafka's own reader reads
 * the rest of the record set. Control
 * batches (transaction markers) are skipped as aiokafka skips them with the default
 * isolation level, read_uncommitted; the worker uses the library's reader for
 * read_committed. With check_crcs each batch's CRC-32C is checked before any of its
 * records is taken, as aiokafka does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Batch header: baseOffset int64, batchLength int32, partitionLeaderEpoch int32,
 * magic int8, crc uint32, attributes int16, lastOffsetDelta int32, baseTimestamp int64,
 * maxTimestamp int64, producerId int64, producerEpoch int16, baseSequence int32,
 * records count int32; then the records. Offsets from the batch's start: */
#define LOG_OVERHEAD 12 /* baseOffset and batchLength: what batchLength does not count */
#define MAGIC_AT 16
#define CRC_AT 17
#define ATTRIBUTES_AT 21
#define LAST_OFFSET_DELTA_AT 23
#define COUNT_AT 57
#define HEADER_SIZE 61
#define COMPRESSION_MASK 0x07
#define CONTROL_FLAG 0x20

enum { DONE = 0, FULL = 1, LIBRARY = 2, BAD_CRC = 3, COMPRESSED = 4, MALFORMED = 5 };

static uint32_t crc32c_table[8][256];

static void crc32c_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc32c_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc32c_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc32c_table[0][c & 0xff] ^ (c >> 8);
            crc32c_table[t][i] = c;
        }
    }
}

/* CRC-32C (Castagnoli), eight bytes a step (the "slicing-by-8" table method). */
static uint32_t crc32c(const unsigned char *p, Py_ssize_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc32c_table[7][lo & 0xff] ^ crc32c_table[6][(lo >> 8) & 0xff] ^
            crc32c_table[5][(lo >> 16) & 0xff] ^ crc32c_table[4][lo >> 24] ^
            crc32c_table[3][p[4]] ^ crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^
            crc32c_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) c = crc32c_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static inline int64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return (int64_t)v;
}

static inline int32_t be32(const unsigned char *p) {
    return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
                     (uint32_t)p[3]);
}

/* A zigzag varint (at most 64 bits) into *v; 0 when it runs past `end` or is too long. */
static inline int varint(const unsigned char **pp, const unsigned char *end, int64_t *v) {
    const unsigned char *p = *pp;
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p >= end) return 0;
        unsigned char b = *p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* One record of a batch: its offset delta and value (value_len -1: null). */
static int read_record(const unsigned char **pp, const unsigned char *end, int64_t *delta,
                       const unsigned char **value, int64_t *value_len) {
    const unsigned char *p = *pp;
    int64_t len, ts_delta, key_len, headers;
    if (!varint(&p, end, &len) || len < 1 || len > end - p) return 0;
    const unsigned char *rend = p + len;
    p++; /* attributes: unused */
    if (!varint(&p, rend, &ts_delta) || !varint(&p, rend, delta)) return 0;
    if (!varint(&p, rend, &key_len) || key_len < -1 || key_len > rend - p) return 0;
    if (key_len > 0) p += key_len;
    if (!varint(&p, rend, value_len) || *value_len < -1 || *value_len > rend - p) return 0;
    *value = p;
    if (*value_len > 0) p += *value_len;
    if (!varint(&p, rend, &headers) || headers < 0) return 0;
    for (int64_t h = 0; h < headers; h++) {
        int64_t n;
        if (!varint(&p, rend, &n) || n < 0 || n > rend - p) return 0;
        p += n;
        if (!varint(&p, rend, &n) || n < -1 || n > rend - p) return 0;
        if (n > 0) p += n;
    }
    if (p != rend) return 0;
    *pp = rend;
    return 1;
}

/* read(data, pos, next_offset, max_records, check_crcs, values, offsets)
 *     -> (status, pos, next_offset)
 *
 * Reads the complete batches of `data` from `pos`, appending the value (bytes, or None)
 * and offset of each record at or above `next_offset` to `values` and `offsets`, at most
 * `max_records` of them. status: 0 every complete batch read (`pos` at the end, or at a
 * truncated last batch, which the broker sends whole in the next fetch); 1 `max_records`
 * reached (`pos` at the batch to go on from); 2 the batch at `pos` is of an older magic,
 * for the library's reader; 3 the batch at `pos` fails its CRC; 4 the batch at `pos` is
 * compressed (any codec bits, CRC checked); 5 the batch at `pos` is malformed (none of
 * its records taken by this call). `next_offset`: past the last record taken
 * or batch skipped, as aiokafka's `next_fetch_offset`. */
static PyObject *read_batches(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t pos, max_records;
    long long next_offset;
    int check_crcs;
    PyObject *values, *offsets;
    if (!PyArg_ParseTuple(args, "y*nLnpO!O!", &buf, &pos, &next_offset, &max_records,
                          &check_crcs, &PyList_Type, &values, &PyList_Type, &offsets))
        return NULL;
    const unsigned char *data = buf.buf;
    const Py_ssize_t size = buf.len;
    Py_ssize_t taken = 0;
    int status = DONE;
    if (pos < 0 || pos > size) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "read: pos outside the data");
        return NULL;
    }
    while (size - pos >= LOG_OVERHEAD) {
        const unsigned char *b = data + pos;
        const int32_t length = be32(b + 8);
        if (length < 0 || length > size - pos - LOG_OVERHEAD) break; /* truncated: done */
        if (taken >= max_records) {
            status = FULL;
            break;
        }
        const Py_ssize_t total = LOG_OVERHEAD + (Py_ssize_t)length;
        /* The magic byte is at the same place in every message format. */
        if (total <= MAGIC_AT) {
            status = MALFORMED;
            break;
        }
        if (b[MAGIC_AT] != 2) {
            status = LIBRARY;
            break;
        }
        if (total < HEADER_SIZE) {
            status = MALFORMED;
            break;
        }
        if (check_crcs && crc32c(b + ATTRIBUTES_AT, total - ATTRIBUTES_AT) !=
                              (uint32_t)be32(b + CRC_AT)) {
            status = BAD_CRC;
            break;
        }
        if ((b[ATTRIBUTES_AT + 1] & COMPRESSION_MASK) != 0) {
            status = COMPRESSED;
            break;
        }
        const int64_t base = be64(b);
        int64_t batch_next;
        /* Offsets from the wire can be anything: one that overflows int64_t (undefined
         * behaviour in C) makes the batch the library's to judge. */
        if (__builtin_add_overflow(base, (int64_t)be32(b + LAST_OFFSET_DELTA_AT) + 1,
                                   &batch_next)) {
            status = LIBRARY;
            break;
        }
        if (!(b[ATTRIBUTES_AT + 1] & CONTROL_FLAG)) {
            const int32_t count = be32(b + COUNT_AT);
            const unsigned char *p = b + HEADER_SIZE, *end = b + total;
            const Py_ssize_t before = PyList_GET_SIZE(values);
            int ok = count >= 0, full = 0;
            for (int32_t i = 0; ok && i < count; i++) {
                int64_t delta, value_len;
                const unsigned char *value;
                if (!read_record(&p, end, &delta, &value, &value_len)) {
                    ok = 0;
                    break;
                }
                int64_t offset;
                if (__builtin_add_overflow(base, delta, &offset)) {
                    ok = 0;
                    break;
                }
                if (offset < next_offset) continue; /* before the fetch offset */
                if (taken >= max_records) {
                    full = 1;
                    break;
                }
                PyObject *v = value_len < 0
                                  ? Py_NewRef(Py_None)
                                  : PyBytes_FromStringAndSize((const char *)value, value_len);
                PyObject *o = v ? PyLong_FromLongLong(offset) : NULL;
                if (!o || PyList_Append(values, v) < 0 || PyList_Append(offsets, o) < 0) {
                    Py_XDECREF(v);
                    Py_XDECREF(o);
                    PyBuffer_Release(&buf);
                    return NULL;
                }
                Py_DECREF(v);
                Py_DECREF(o);
                taken++;
                next_offset = offset + 1;
            }
            if (ok && !full && p != end) ok = 0;
            if (!ok) {
                /* Malformed: take none of it (of what this call took). */
                Py_ssize_t took = PyList_GET_SIZE(values) - before;
                if (took > 0) {
                    next_offset = PyLong_AsLongLong(PyList_GET_ITEM(offsets, before));
                    if (PyList_SetSlice(values, before, PyList_GET_SIZE(values), NULL) < 0 ||
                        PyList_SetSlice(offsets, before, PyList_GET_SIZE(offsets), NULL) < 0) {
                        PyBuffer_Release(&buf);
                        return NULL;
                    }
                    taken -= took;
                }
                status = MALFORMED;
                break;
            }
            if (full) {
                status = FULL;
                break;
            }
        }
        /* As aiokafka: past the batch's last offset even when compaction removed it. */
        if (batch_next > next_offset) next_offset = batch_next;
        pos += total;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("inL", status, pos, next_offset);
}

static PyMethodDef methods[] = {
    {"read", read_batches, METH_VARARGS,
     "Read the uncompressed v2 record batches of a fetched record set; see the source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_recordbatch",
    "Kafka record batches (format v2, uncompressed) read into value and offset lists.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__recordbatch(void) {
    crc32c_init();
    return PyModule_Create(&module);
}
