/*
 * The table fingerprint of fingerprint.ts, over a stream of COPY text: the rows are split at
 * each "\n" and each is hashed with MurmurHash3_x86_128 as its bytes pass, so a row split between
 * two calls needs no gathering, and the hashes are summed. Compiled to WebAssembly by
 * scripts/build-wasm.sh; copy-fingerprint.wasm.ts holds the result.
 *
 * In an archive (archive-reader.ts) the COPY text of a table comes in length-prefixed chunks,
 * one per row as pg_dump writes them: that framing is read here too, so that a piece of the
 * archive costs one call, not one per row.
 *
 * The module keeps nothing between calls but `state`, which its caller loads before a call and
 * saves after it, so one instance serves any number of fingerprints. Bytes go through `input`.
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(name)))

enum { INPUT_SIZE = 256 * 1024 };

enum {
  /* The "\." line that ends COPY data in an archive was seen: only empty lines may follow. */
  TERMINATED = 1,
  /* The text is a data block of pg_dump's archive, whose rows end at a "\." line. */
  ARCHIVE = 2,
  /* The input is the archive's framing of that text: chunks, each an int length then its bytes,
     up to a zero length. */
  FRAMED = 4,
};

enum {
  FED = 0,
  NUL_BYTE = 1,
  DATA_AFTER_TERMINATOR = 2,
  /* The zero length that ends the block ended just before input[problemAt]. */
  BLOCK_END = 3,
  /* A chunk length with a sign byte other than 0 or 1, or a negative zero. */
  INVALID_INT = 4,
  NEGATIVE_LENGTH = 5,
};

/* fingerprint.ts reads the fields at these offsets. */
typedef struct {
  uint32_t sum[4];     /* 0: the sum of the row hashes, least significant word first */
  uint64_t rows;       /* 16 */
  uint64_t rowLength;  /* 24: bytes of the current row so far */
  uint32_t h[4];       /* 32: the current row's hash after its complete 16-byte blocks */
  uint8_t tail[16];    /* 48: its bytes after those blocks, rowLength % 16 of them */
  uint32_t flags;      /* 64 */
  uint32_t problemAt;  /* 68: where in the input a call that did not return FED stopped */
  uint64_t chunkLeft;  /* 72: FRAMED: bytes of the current chunk still to come */
  uint32_t intSize;    /* 80: FRAMED: the archive's int size, its sign byte not counted */
  uint32_t intHave;    /* 84: FRAMED: bytes of the length being read, when it spans calls */
  uint8_t intBytes[16];/* 88 */
} State;
_Static_assert(sizeof(State) == 104, "fingerprint.ts reads the state at fixed offsets");

static State state;
/* 16 bytes more than the input, so that a row's last word can be loaded whole: see addRow. */
static uint8_t input[INPUT_SIZE + 16] __attribute__((aligned(16)));

EXPORT("state") State *statePointer(void) { return &state; }
EXPORT("input") uint8_t *inputPointer(void) { return input; }
EXPORT("inputSize") uint32_t inputSize(void) { return INPUT_SIZE; }

#define SEED 0x5eedb0c5u
#define C1 0x239b961bu
#define C2 0xab0e9789u
#define C3 0x38b34ae5u
#define C4 0xa1e38b93u

static inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t load32(const uint8_t *p) {
  uint32_t word;
  __builtin_memcpy(&word, p, 4);
  return word;
}

static inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

/* The hash of a row being read. */
typedef struct {
  uint32_t h1, h2, h3, h4;
} Hash;

static inline Hash mixBlock(Hash h, const uint8_t *block) {
  uint32_t k1 = load32(block), k2 = load32(block + 4), k3 = load32(block + 8), k4 = load32(block + 12);
  k1 *= C1; k1 = rotl(k1, 15); k1 *= C2; h.h1 ^= k1;
  h.h1 = rotl(h.h1, 19); h.h1 += h.h2; h.h1 = h.h1 * 5 + 0x561ccd1bu;
  k2 *= C2; k2 = rotl(k2, 16); k2 *= C3; h.h2 ^= k2;
  h.h2 = rotl(h.h2, 17); h.h2 += h.h3; h.h2 = h.h2 * 5 + 0x0bcaa747u;
  k3 *= C3; k3 = rotl(k3, 17); k3 *= C4; h.h3 ^= k3;
  h.h3 = rotl(h.h3, 15); h.h3 += h.h4; h.h3 = h.h3 * 5 + 0x96cd1c35u;
  k4 *= C4; k4 = rotl(k4, 18); k4 *= C1; h.h4 ^= k4;
  h.h4 = rotl(h.h4, 13); h.h4 += h.h1; h.h4 = h.h4 * 5 + 0x32ac3b17u;
  return h;
}

/* Mixes `blocks` 16-byte blocks into the hash of the row being read across calls. */
static void mixBlocks(const uint8_t *p, uint32_t blocks) {
  Hash h = {state.h[0], state.h[1], state.h[2], state.h[3]};
  for (; blocks > 0; blocks--, p += 16) h = mixBlock(h, p);
  state.h[0] = h.h1; state.h[1] = h.h2; state.h[2] = h.h3; state.h[3] = h.h4;
}

/* Adds bytes [p, p + n) to the current row. */
static void absorb(const uint8_t *p, uint32_t n) {
  uint32_t have = (uint32_t)state.rowLength & 15;
  state.rowLength += n;
  if (have > 0) {
    uint32_t take = 16 - have < n ? 16 - have : n;
    for (uint32_t i = 0; i < take; i++) state.tail[have + i] = p[i];
    p += take;
    n -= take;
    if (have + take < 16) return;
    mixBlocks(state.tail, 1);
  }
  mixBlocks(p, n >> 4);
  p += n & ~15u;
  n &= 15;
  for (uint32_t i = 0; i < n; i++) state.tail[i] = p[i];
}

/*
 * Mixes in a row's last bytes (tail, its bytes past the row zero) and its length, and adds its
 * hash to the sum.
 */
static void finishRow(Hash h, v128_t tail, uint64_t length) {
  uint32_t h1 = h.h1, h2 = h.h2, h3 = h.h3, h4 = h.h4;
  /* A zero word mixes in as nothing, so all four tail words are, whatever the tail's length. */
  uint32_t k1 = wasm_i32x4_extract_lane(tail, 0), k2 = wasm_i32x4_extract_lane(tail, 1);
  uint32_t k3 = wasm_i32x4_extract_lane(tail, 2), k4 = wasm_i32x4_extract_lane(tail, 3);
  k1 *= C1; k1 = rotl(k1, 15); k1 *= C2; h1 ^= k1;
  k2 *= C2; k2 = rotl(k2, 16); k2 *= C3; h2 ^= k2;
  k3 *= C3; k3 = rotl(k3, 17); k3 *= C4; h3 ^= k3;
  k4 *= C4; k4 = rotl(k4, 18); k4 *= C1; h4 ^= k4;
  uint32_t length32 = (uint32_t)length;
  h1 ^= length32; h2 ^= length32; h3 ^= length32; h4 ^= length32;
  h1 += h2 + h3 + h4;
  h2 += h1; h3 += h1; h4 += h1;
  h1 = fmix32(h1); h2 = fmix32(h2); h3 = fmix32(h3); h4 = fmix32(h4);
  h1 += h2 + h3 + h4;
  h2 += h1; h3 += h1; h4 += h1;
  uint64_t low = (uint64_t)state.sum[0] + h1;
  state.sum[0] = (uint32_t)low;
  low = (uint64_t)state.sum[1] + h2 + (low >> 32);
  state.sum[1] = (uint32_t)low;
  low = (uint64_t)state.sum[2] + h3 + (low >> 32);
  state.sum[2] = (uint32_t)low;
  state.sum[3] += h4 + (uint32_t)(low >> 32);
  state.rows++;
}

/* The first `have` bytes of the 16 at p, the rest zero. */
static inline v128_t firstBytes(const uint8_t *p, uint32_t have) {
  const v128_t indexes = wasm_i8x16_make(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return wasm_v128_and(wasm_v128_load(p), wasm_i8x16_lt(indexes, wasm_i8x16_splat((int8_t)have)));
}

static inline int isTerminator(const uint8_t *row, uint64_t length) {
  return length == 2 && row[0] == '\\' && row[1] == '.' && (state.flags & ARCHIVE);
}

/* Ends the current row, begun in an earlier call: counts it and adds its hash, unless it ends an archive's COPY data. */
static void endRow(void) {
  const uint64_t length = state.rowLength;
  state.rowLength = 0;
  if (isTerminator(state.tail, length)) {
    state.flags |= TERMINATED;
    return;
  }
  const Hash h = {state.h[0], state.h[1], state.h[2], state.h[3]};
  finishRow(h, firstBytes(state.tail, (uint32_t)length & 15), length);
  state.h[0] = state.h[1] = state.h[2] = state.h[3] = SEED;
}

/*
 * Counts and hashes a row that lies whole in [p, p + n), unless it ends an archive's COPY data:
 * the common case, kept in locals. The input's padding lets its last word be loaded whole.
 */
static void addRow(const uint8_t *p, uint32_t n) {
  if (isTerminator(p, n)) {
    state.flags |= TERMINATED;
    return;
  }
  Hash h = {SEED, SEED, SEED, SEED};
  const uint8_t *blocksEnd = p + (n & ~15u);
  for (const uint8_t *block = p; block < blocksEnd; block += 16) h = mixBlock(h, block);
  finishRow(h, firstBytes(blocksEnd, n & 15), n);
}

/* The first "\n" or NUL byte in [p, end), or end. */
static const uint8_t *findStop(const uint8_t *p, const uint8_t *end) {
  const v128_t newline = wasm_i8x16_splat('\n');
  const v128_t nul = wasm_i8x16_splat(0);
  for (; end - p >= 16; p += 16) {
    v128_t bytes = wasm_v128_load(p);
    uint32_t hits = wasm_i8x16_bitmask(wasm_v128_or(wasm_i8x16_eq(bytes, newline), wasm_i8x16_eq(bytes, nul)));
    if (hits) return p + __builtin_ctz(hits);
  }
  for (; p < end; p++)
    if (*p == '\n' || *p == 0) return p;
  return end;
}

/* Sets the state of a fingerprint of no rows. */
EXPORT("reset") void reset(void) {
  __builtin_memset(&state, 0, sizeof state);
  state.h[0] = state.h[1] = state.h[2] = state.h[3] = SEED;
}

/* Reads COPY text [p, end): FED, or why it stopped at input[state.problemAt]. */
static uint32_t readText(const uint8_t *p, const uint8_t *end) {
  while (p < end) {
    if (state.flags & TERMINATED) {
      for (; p < end; p++) {
        if (*p != '\n') {
          state.problemAt = (uint32_t)(p - input);
          return DATA_AFTER_TERMINATOR;
        }
      }
      break;
    }
    const uint8_t *stop = findStop(p, end);
    if (stop < end && *stop == '\n' && state.rowLength == 0) {
      addRow(p, (uint32_t)(stop - p));
      p = stop + 1;
      continue;
    }
    absorb(p, (uint32_t)(stop - p));
    if (stop == end) break;
    if (*stop == 0) {
      state.problemAt = (uint32_t)(stop - input);
      return NUL_BYTE;
    }
    endRow();
    p = stop + 1;
  }
  return FED;
}

/* Reads chunks from [p, end) up to the block's end: FED, or why it stopped. */
static uint32_t readChunks(const uint8_t *p, const uint8_t *end) {
  const uint32_t width = 1 + state.intSize;
  while (p < end) {
    if (state.chunkLeft == 0) {
      const uint8_t *bytes = p;
      if (state.intHave > 0 || (uint32_t)(end - p) < width) {
        /* A length split between calls is gathered. */
        while (state.intHave < width && p < end) state.intBytes[state.intHave++] = *p++;
        if (state.intHave < width) break;
        state.intHave = 0;
        bytes = state.intBytes;
      } else {
        p += width;
      }
      state.problemAt = (uint32_t)(p - input);
      /* As archive-reader.ts's decodeInt: the magnitude's bytes least significant first. */
      uint64_t magnitude = 0;
      for (uint32_t i = width - 1; i >= 1; i--) magnitude = (magnitude << 8) | bytes[i];
      const uint8_t sign = bytes[0];
      if (sign > 1 || (sign == 1 && magnitude == 0) || magnitude >= (1ull << 53)) return INVALID_INT;
      if (sign == 1) return NEGATIVE_LENGTH;
      if (magnitude == 0) return BLOCK_END;
      state.chunkLeft = magnitude;
      continue;
    }
    const uint64_t available = (uint64_t)(end - p);
    const uint32_t take = (uint32_t)(state.chunkLeft < available ? state.chunkLeft : available);
    const uint32_t stopped = readText(p, p + take);
    if (stopped != FED) return stopped;
    p += take;
    state.chunkLeft -= take;
  }
  return FED;
}

/* Reads input[0, length): FED, or why it stopped at input[state.problemAt]. */
EXPORT("feed") uint32_t feed(uint32_t length) {
  if (state.flags & FRAMED) return readChunks(input, input + length);
  return readText(input, input + length);
}
