/* Compiled kernels of prefpred.features: exact integer counts over UTF-8 text buffers.
 *
 * Every function reads strings as one UTF-8 byte buffer plus int64 byte offsets (what
 * prefpred.features.kernels passes from polars' Arrow buffers), classifies code points with a
 * uint16 bit table built in Python from the regular expressions of prefpred.features.patterns
 * (one definition of every character class), writes int64 counts into a caller-owned array, and
 * releases the GIL while it works. The polars expressions of prefpred.features.build compute the
 * same numbers; the tests check that both give bit-identical features.
 *
 * Word tokens are identified by a 64-bit hash of their bytes and word trigrams by a hash of three
 * token hashes (as the polars path does: two tokens are the same when their hashes are).
 * Character trigrams are exact: three 21-bit code points packed into one integer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Class bits of the table (kept in step with prefpred/features/kernels.py: CLASS_BITS). */
enum {
    C_WS = 1 << 0, C_TOKRUN = 1 << 1, C_DIGIT = 1 << 2, C_UPPER = 1 << 3, C_PUNCT = 1 << 4,
    C_QUESTION = 1 << 5, C_EXCLAIM = 1 << 6, C_EMOJI = 1 << 7, C_LATIN = 1 << 8,
    C_CYRILLIC = 1 << 9, C_CJK = 1 << 10, C_TERM = 1 << 11, C_WORDRUN = 1 << 12,
    C_WORDONE = 1 << 13
};
/* Columns of text_counts (kept in step with kernels.py: TEXT_COUNTS). */
enum {
    K_CHARS, K_WORDS, K_TOKENS, K_SENTENCES, K_DIGITS, K_UPPER, K_PUNCT, K_QUESTION,
    K_EXCLAIM, K_EMOJI, K_LATIN, K_CYRILLIC, K_CJK, K_N
};
#define WORD_COLS 20 /* columns of word_overlap (kernels.py: WORD_COLUMNS) */

typedef struct {
    const uint16_t *table;
    Py_ssize_t size;
} ctab;

static inline uint16_t cls(const ctab *t, uint32_t cp) {
    return cp < (uint32_t)t->size ? t->table[cp] : 0;
}

/* Decode one code point of valid UTF-8 at p (< end); returns its byte length. */
static inline int decode(const uint8_t *p, const uint8_t *end, uint32_t *cp) {
    uint8_t b = p[0];
    if (b < 0x80) { *cp = b; return 1; }
    int n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
    if (p + n > end) { *cp = 0xFFFD; return (int)(end - p); } /* never for valid UTF-8 */
    uint32_t v = b & (n == 4 ? 0x07 : n == 3 ? 0x0F : 0x1F);
    for (int k = 1; k < n; k++) v = (v << 6) | (p[k] & 0x3F);
    *cp = v;
    return n;
}

static inline uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30; x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27; x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* ------------------------------------------------------------------ open-addressing table */
/* Keys -> `width` int64 values; cleared in O(1) by bumping a generation stamp. */
typedef struct {
    uint64_t *key; uint32_t *gen; int64_t *val; size_t *used;
    size_t cap, n, width; uint32_t cur;
} htab;

static int ht_alloc(htab *h, size_t cap) {
    h->key = malloc(cap * sizeof(uint64_t));
    h->gen = calloc(cap, sizeof(uint32_t));
    h->val = malloc(cap * (h->width ? h->width : 1) * sizeof(int64_t));
    h->used = malloc((cap / 2 + 1) * sizeof(size_t));
    h->cap = cap;
    return h->key && h->gen && h->val && h->used;
}

static void ht_free(htab *h) {
    free(h->key); free(h->gen); free(h->val); free(h->used);
    h->key = NULL; h->gen = NULL; h->val = NULL; h->used = NULL;
}

static int ht_init(htab *h, size_t width) {
    memset(h, 0, sizeof(*h));
    h->width = width;
    h->cur = 1;
    return ht_alloc(h, 1024);
}

static void ht_clear(htab *h) {
    h->n = 0;
    if (++h->cur == 0) { memset(h->gen, 0, h->cap * sizeof(uint32_t)); h->cur = 1; }
}

static size_t ht_probe(const htab *h, uint64_t key) {
    size_t mask = h->cap - 1, i = (size_t)mix64(key) & mask;
    while (h->gen[i] == h->cur && h->key[i] != key) i = (i + 1) & mask;
    return i;
}

static int ht_grow(htab *h) {
    htab old = *h;
    if (!ht_alloc(h, old.cap * 2)) { ht_free(h); *h = old; return 0; }
    h->n = 0; h->cur = 1;
    for (size_t u = 0; u < old.n; u++) {
        size_t j = old.used[u], i = ht_probe(h, old.key[j]);
        h->gen[i] = 1; h->key[i] = old.key[j];
        memcpy(h->val + i * h->width, old.val + j * old.width, h->width * sizeof(int64_t));
        h->used[h->n++] = i;
    }
    ht_free(&old);
    return 1;
}

/* The slot of `key`, inserted with zero values if new (*is_new set); SIZE_MAX when out of
 * memory. */
static size_t ht_get(htab *h, uint64_t key, int *is_new) {
    size_t i = ht_probe(h, key);
    *is_new = h->gen[i] != h->cur;
    if (!*is_new) return i;
    if ((h->n + 1) * 2 > h->cap) {
        if (!ht_grow(h)) return SIZE_MAX;
        i = ht_probe(h, key);
    }
    h->gen[i] = h->cur; h->key[i] = key;
    memset(h->val + i * h->width, 0, h->width * sizeof(int64_t));
    h->used[h->n++] = i;
    return i;
}

/* ------------------------------------------------------------------ text counts */
static int count_text(const ctab *t, htab *unused, const uint8_t *(*texts)[2], int64_t *o) {
    const uint8_t *p = texts[0][0], *end = texts[0][1];
    (void)unused;
    int in_word = 0, in_run = 0, in_sentence = 0;
    memset(o, 0, K_N * sizeof(int64_t));
    while (p < end) {
        uint32_t cp;
        p += decode(p, end, &cp);
        uint16_t c = cls(t, cp);
        o[K_CHARS]++;
        /* words: runs of non-whitespace */
        if (c & C_WS) in_word = 0;
        else if (!in_word) { in_word = 1; o[K_WORDS]++; }
        /* tokens: runs of letters/digits, or one other visible character */
        if (c & C_TOKRUN) { if (!in_run) { in_run = 1; o[K_TOKENS]++; } }
        else { in_run = 0; if (!(c & C_WS)) o[K_TOKENS]++; }
        /* sentences: a visible non-terminator, then anything up to a terminator or '\n' */
        if (in_sentence) { if ((c & C_TERM) || cp == '\n') in_sentence = 0; }
        else if (!(c & (C_WS | C_TERM))) { in_sentence = 1; o[K_SENTENCES]++; }
        o[K_DIGITS] += (c & C_DIGIT) != 0;
        o[K_UPPER] += (c & C_UPPER) != 0;
        o[K_PUNCT] += (c & C_PUNCT) != 0;
        o[K_QUESTION] += (c & C_QUESTION) != 0;
        o[K_EXCLAIM] += (c & C_EXCLAIM) != 0;
        o[K_EMOJI] += (c & C_EMOJI) != 0;
        o[K_LATIN] += (c & C_LATIN) != 0;
        o[K_CYRILLIC] += (c & C_CYRILLIC) != 0;
        o[K_CJK] += (c & C_CJK) != 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ word tokens */
/* Next word token at or after p: runs of C_WORDRUN characters, or one C_WORDONE character.
 * Returns its hash (never 0) and advances *pp past it; 0 at the end of the text. */
static uint64_t next_word(const ctab *t, const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp;
    while (p < end) {
        uint32_t cp;
        const uint8_t *start = p;
        p += decode(p, end, &cp);
        uint16_t c = cls(t, cp);
        if (!(c & (C_WORDRUN | C_WORDONE))) continue;
        if (c & C_WORDRUN) {
            const uint8_t *q = p;
            while (q < end) {
                uint32_t cq;
                int len = decode(q, end, &cq);
                if (!(cls(t, cq) & C_WORDRUN)) break;
                q += len;
            }
            p = q;
        }
        uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a over the token's bytes */
        for (const uint8_t *b = start; b < p; b++) h = (h ^ *b) * 0x100000001B3ULL;
        h = mix64(h);
        *pp = p;
        return h ? h : 1;
    }
    *pp = end;
    return 0;
}

/* Word trigrams of one text: their number and how many repeat an earlier one. */
static int word_ngrams_one(const ctab *t, htab *seen, const uint8_t *(*texts)[2], int64_t *o) {
    const uint8_t *p = texts[0][0], *end = texts[0][1];
    uint64_t h1 = 0, h2 = 0, h;
    int64_t n_tokens = 0, n = 0, unique = 0;
    ht_clear(seen);
    while ((h = next_word(t, &p, end)) != 0) {
        if (++n_tokens >= 3) {
            int is_new;
            uint64_t g = h1 * 0x9E3779B97F4A7C15ULL + h2 * 0xC2B2AE3D27D4EB4FULL + h;
            if (ht_get(seen, g, &is_new) == SIZE_MAX) return 0;
            n++; unique += is_new;
        }
        h1 = h2; h2 = h;
    }
    o[0] = n; o[1] = n - unique;
    return 1;
}

/* Word overlap of one row's prompt (doc 0), response A (1) and B (2): term counts per document,
 * then the integer sums behind the TF-IDF cosines and word-set overlaps (see kernels.py). */
static int word_overlap_one(const ctab *t, htab *terms, const uint8_t *(*docs)[2], int64_t *o) {
    ht_clear(terms);
    for (int k = 0; k < 3; k++) {
        const uint8_t *p = docs[k][0], *end = docs[k][1];
        uint64_t h;
        while ((h = next_word(t, &p, end)) != 0) {
            int is_new;
            size_t i = ht_get(terms, h, &is_new);
            if (i == SIZE_MAX) return 0;
            terms->val[i * 3 + k]++;
        }
    }
    memset(o, 0, WORD_COLS * sizeof(int64_t));
    for (size_t u = 0; u < terms->n; u++) {
        const int64_t *c = terms->val + terms->used[u] * 3;
        int64_t tp = c[0], ta = c[1], tb = c[2];
        int pp = tp > 0, pa = ta > 0, pb = tb > 0, df = pp + pa + pb;
        /* pp_d, aa_d, bb_d for d = 1, 2, 3: columns 0..8 */
        o[(df - 1) * 3 + 0] += tp * tp;
        o[(df - 1) * 3 + 1] += ta * ta;
        o[(df - 1) * 3 + 2] += tb * tb;
        if (df >= 2) { /* ab_d, pa_d, pb_d for d = 2, 3: columns 9..14 */
            o[9 + (df - 2) * 3 + 0] += ta * tb;
            o[9 + (df - 2) * 3 + 1] += tp * ta;
            o[9 + (df - 2) * 3 + 2] += tp * tb;
        }
        o[15] += pp;            /* np */
        o[16] += pa && pb;      /* iab */
        o[17] += pa || pb;      /* uab */
        o[18] += pp && pa;      /* ipa */
        o[19] += pp && pb;      /* ipb */
    }
    return 1;
}

/* ------------------------------------------------------------------ character trigrams */
/* Distinct character trigrams of A, of B, and of both (exact packed code points). */
static int char_overlap_one(const ctab *unused, htab *grams, const uint8_t *(*texts)[2],
                            int64_t *o) {
    (void)unused;
    ht_clear(grams);
    for (int k = 0; k < 2; k++) {
        const uint8_t *p = texts[k][0], *end = texts[k][1];
        uint64_t c1 = 0, c2 = 0;
        int64_t seen = 0;
        while (p < end) {
            uint32_t cp;
            p += decode(p, end, &cp);
            if (++seen >= 3) {
                int is_new;
                /* +1: the trigram of three NUL characters must not be key 0 */
                uint64_t g = ((c1 << 42) | (c2 << 21) | cp) + 1;
                size_t i = ht_get(grams, g, &is_new);
                if (i == SIZE_MAX) return 0;
                grams->val[i] |= (int64_t)1 << k;
            }
            c1 = c2; c2 = cp;
        }
    }
    o[0] = o[1] = o[2] = 0;
    for (size_t u = 0; u < grams->n; u++) {
        int64_t f = grams->val[grams->used[u]];
        o[0] += f & 1; o[1] += (f >> 1) & 1; o[2] += f == 3;
    }
    return 1;
}

/* ------------------------------------------------------------------ the per-row driver */
/* One row's result from `k` texts (each a [start, end) byte span) into `o`; 0 = out of memory. */
typedef int (*row_fn)(const ctab *t, htab *h, const uint8_t *(*texts)[2], int64_t *o);

#define MAX_TEXTS 3

/* Arguments: `k` pairs (UTF-8 bytes, int64 offsets) of equally many texts, the class table when
 * `with_table`, then a writable int64 output of rows x `cols`. Checks every offset before reading,
 * then runs `fn` on each row without the GIL. */
static PyObject *per_row(PyObject *args, int k, int with_table, size_t width, Py_ssize_t cols,
                         row_fn fn) {
    Py_buffer buf[2 * MAX_TEXTS + 2];
    Py_ssize_t nargs = 2 * k + with_table + 1, held = 0, n = -1;
    PyObject *ret = NULL;
    if (PyTuple_GET_SIZE(args) != nargs)
        return PyErr_Format(PyExc_TypeError, "expected %zd arguments", nargs);
    for (; held < nargs; held++) {
        int flags = held == nargs - 1 ? PyBUF_WRITABLE : PyBUF_SIMPLE;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(args, held), &buf[held], flags) < 0) goto done;
    }
    for (int j = 0; j < k; j++) {
        Py_buffer *data = &buf[2 * j], *offsets = &buf[2 * j + 1];
        if (offsets->len % 8 || offsets->len < 8) {
            PyErr_SetString(PyExc_ValueError, "offsets must be int64, at least one");
            goto done;
        }
        const int64_t *off = offsets->buf;
        Py_ssize_t rows = offsets->len / 8 - 1;
        if (n >= 0 && rows != n) {
            PyErr_SetString(PyExc_ValueError, "the texts differ in number");
            goto done;
        }
        n = rows;
        for (Py_ssize_t i = 0; i < n; i++)
            if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > data->len) {
                PyErr_SetString(PyExc_ValueError, "offsets do not fit the data");
                goto done;
            }
    }
    Py_buffer *out = &buf[nargs - 1];
    if (out->len != n * cols * 8) {
        PyErr_Format(PyExc_ValueError, "out must hold %zd int64 values", n * cols);
        goto done;
    }
    ctab t = {NULL, 0};
    if (with_table) { t.table = buf[2 * k].buf; t.size = buf[2 * k].len / 2; }
    htab h;
    if (!ht_init(&h, width)) { ht_free(&h); PyErr_NoMemory(); goto done; }
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        const uint8_t *texts[MAX_TEXTS][2];
        for (int j = 0; j < k; j++) {
            const uint8_t *d = buf[2 * j].buf;
            const int64_t *off = buf[2 * j + 1].buf;
            texts[j][0] = d + off[i]; texts[j][1] = d + off[i + 1];
        }
        ok = fn(&t, &h, texts, (int64_t *)out->buf + i * cols);
    }
    Py_END_ALLOW_THREADS
    ht_free(&h);
    ret = ok ? Py_NewRef(Py_None) : PyErr_NoMemory();
done:
    for (Py_ssize_t j = 0; j < held; j++) PyBuffer_Release(&buf[j]);
    return ret;
}

static PyObject *text_counts(PyObject *self, PyObject *args) {
    (void)self;
    return per_row(args, 1, 1, 0, K_N, count_text);
}

static PyObject *word_ngrams(PyObject *self, PyObject *args) {
    (void)self;
    return per_row(args, 1, 1, 0, 2, word_ngrams_one);
}

static PyObject *word_overlap(PyObject *self, PyObject *args) {
    (void)self;
    return per_row(args, 3, 1, 3, WORD_COLS, word_overlap_one);
}

static PyObject *char_overlap(PyObject *self, PyObject *args) {
    (void)self;
    return per_row(args, 2, 0, 1, 3, char_overlap_one);
}

/* ------------------------------------------------------------------ module */
static PyMethodDef methods[] = {
    {"text_counts", text_counts, METH_VARARGS,
     "text_counts(data, offsets, table, out): character-class and run counts per text."},
    {"word_ngrams", word_ngrams, METH_VARARGS,
     "word_ngrams(data, offsets, table, out): word trigrams and repeated ones per text."},
    {"word_overlap", word_overlap, METH_VARARGS,
     "word_overlap(p, p_off, a, a_off, b, b_off, table, out): term-count sums per row."},
    {"char_overlap", char_overlap, METH_VARARGS,
     "char_overlap(a, a_off, b, b_off, out): distinct character trigrams of A, B, both."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "Compiled text kernels of prefpred.features.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
