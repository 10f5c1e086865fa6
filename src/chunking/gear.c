/*
 * The scanning loop of fastcdc.ts's Chunker: the gear hash over the input, cut points and sketch
 * candidates, exactly as the JavaScript defines them. Compiled to WebAssembly by
 * scripts/build-wasm.sh; gear.wasm.ts holds the result.
 */
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))

enum {
  INPUT_SIZE = 1 << 20,
  /* As fastcdc.ts's CANDIDATE_CAPACITY. */
  CAPACITY = 4096,
  /*
   * Bytes hashed between tests for a low rank: one branch for eight bytes took the loop from
   * 1.3 to 2 GB/s (four: 1.8, sixteen: 1.2).
   */
  STRIDE = 8,
};

#define BIAS 0x80000000u

static int32_t gear[256];
static uint8_t input[INPUT_SIZE];
/* The candidates a scan recorded, in order. */
static int32_t ranks[CAPACITY], ends[CAPACITY];

static struct {
  int32_t hash;
  uint32_t candidates;
} result;

/* The parameters of the scan under way. */
static uint32_t room;
static uint32_t chunkOffset;
static int32_t limit;

EXPORT("gear") int32_t *gearPointer(void) { return gear; }
EXPORT("input") uint8_t *inputPointer(void) { return input; }
EXPORT("inputSize") uint32_t inputSize(void) { return INPUT_SIZE; }
EXPORT("ranks") int32_t *ranksPointer(void) { return ranks; }
EXPORT("ends") int32_t *endsPointer(void) { return ends; }
EXPORT("result") void *resultPointer(void) { return &result; }

/*
 * Scans input[from, to) from *hash: the index past the cut, or -1. The parameters are copied
 * into locals, so that the compiler keeps them in registers: stores into the candidate arrays
 * could otherwise alias them and force a reload at every byte.
 */
static int32_t scanRange(uint32_t from, uint32_t to, uint32_t mask, uint32_t *hash) {
  const int32_t candidateLimit = limit;
  const uint32_t offset = chunkOffset;
  const uint32_t capacity = room;
  uint32_t count = result.candidates;
  uint32_t h = *hash;
  int32_t cut = -1;
  for (uint32_t at = from; at < to;) {
    if (to - at >= STRIDE) {
      /* STRIDE bytes with one branch: a hash that ranks low is rare. */
      uint32_t next = h;
      uint32_t low = 0;
      for (uint32_t k = 0; k < STRIDE; k++) {
        next = (next << 1) + (uint32_t)gear[input[at + k]];
        low |= (uint32_t)((int32_t)(next ^ BIAS) < candidateLimit);
      }
      if (!low) {
        h = next;
        at += STRIDE;
        continue;
      }
    }
    /* One byte, where one of the next STRIDE ranks low or fewer than STRIDE are left. */
    h = (h << 1) + (uint32_t)gear[input[at]];
    /* Whether the hash ranks as a sketch candidate (every cut point does). */
    if ((int32_t)(h ^ BIAS) < candidateLimit) {
      if ((h & mask) == 0) {
        cut = (int32_t)(at + 1);
        break;
      }
      if (count < capacity) {
        ranks[count] = (int32_t)h;
        ends[count++] = (int32_t)(at + offset);
      }
    }
    at++;
  }
  result.candidates = count;
  *hash = h;
  return cut;
}

/*
 * Scans input[0, length), where input[0] is byte `offset` of the chunk and the hash so far is
 * `hash`: the first `strictLength` bytes with `maskStrict`, the rest with `maskLoose`. Returns
 * the index just past the cut point, or -1; result has the hash (when there is no cut) and the
 * candidates recorded, at most `candidateRoom` of them, in ranks and ends.
 */
EXPORT("scan")
int32_t scan(uint32_t length, int32_t hash, uint32_t strictLength, int32_t maskStrict, int32_t maskLoose,
             int32_t candidateLimit, uint32_t offset, uint32_t candidateRoom) {
  room = candidateRoom;
  chunkOffset = offset;
  limit = candidateLimit;
  result.candidates = 0;
  uint32_t h = (uint32_t)hash;
  int32_t cut = scanRange(0, strictLength, (uint32_t)maskStrict, &h);
  if (cut < 0) cut = scanRange(strictLength, length, (uint32_t)maskLoose, &h);
  result.hash = (int32_t)h;
  return cut;
}
