package mark

import (
	"errors"
	"strings"
)

// maxLaneLen is the longest lane name: one leading character and up to 62 more.
const maxLaneLen = 63

// errBadLane explains the lane name syntax.
var errBadLane = errors.New("a lane is 1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")

// parseLane returns the lower-cased lane name s, or an error when s is not a lane name.
// It does not allocate when s is already lower-case.
func parseLane(s string) (string, error) {
	if s == "" || len(s) > maxLaneLen {
		return "", errBadLane
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && (i == 0 || strings.IndexByte("._-", s[i]) < 0) {
			return "", errBadLane
		}
	}
	return strings.ToLower(s), nil
}
