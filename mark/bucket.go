package mark

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
)

// bucketCount is the number of percentage buckets: one bucket is a hundredth of a percent.
const bucketCount = 10000

// bucket returns the bucket of key under a salt, given as salt + ":": the first 8 bytes of
// SHA-256(salt + ":" + key) read as a big-endian integer, modulo 10000. It is one expression:
// under Yaegi, every variable and expression of a function costs an allocation per call (the
// concatenation is cheaper there than copying into a buffer); compiled, the concatenation stays
// on the stack when it is at most 32 bytes long. matchCandidate computes it inline for a
// percent-only rule and a request with a user ID (the bucket vectors test goes through both).
func bucket(saltColon, key string) uint64 {
	sum := sha256.Sum256([]byte(saltColon + key))
	return binary.BigEndian.Uint64(sum[:]) % bucketCount
}

// parsePercent checks a percentage and returns its threshold: the number of buckets, out of
// 10000, that match (percent × 100).
func parsePercent(p float64) (uint64, error) {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return 0, errors.New("must be between 0 and 100")
	}
	// The shortest decimal that reads back as p is what the configuration said.
	digits := strconv.FormatFloat(p, 'f', -1, 64)
	if dot := strings.IndexByte(digits, '.'); dot >= 0 && len(digits)-dot-1 > 2 {
		return 0, errors.New("must have at most two decimals")
	}
	return uint64(math.Round(p * 100)), nil
}
