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

static inline uint32_t step(uint32_t hash, uint32_t at) { return (hash << 1) + (uint32_t)gear[input[at]]; }

/* Whether the hash ranks as a sketch candidate (every cut point does). */
static inline int ranks_low(uint32_t hash) { return (int32_t)(hash ^ BIAS) < limit; }

/* Scans input[from, to) from *hash: the index past the cut, or -1. */
static int32_t scanRange(uint32_t from, uint32_t to, uint32_t mask, uint32_t *hash) {
  uint32_t h = *hash;
  for (uint32_t at = from; at < to; at++) {
    h = step(h, at);
    if (ranks_low(h)) {
      if ((h & mask) == 0) return (int32_t)(at + 1);
      if (result.candidates < room) {
        ranks[result.candidates] = (int32_t)h;
        ends[result.candidates++] = (int32_t)(at + chunkOffset);
      }
    }
  }
  *hash = h;
  return -1;
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
