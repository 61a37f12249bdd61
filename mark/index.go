package mark

import (
	"regexp"
	"sort"
	"strings"
)

// The rule index lets a request evaluate only the rules it can match. Each rule that has a
// selective condition is filed under it — its anchor: its users, its exact path, an exact header,
// cookie or query value, its path prefix or its methods, in that order of preference. A request
// reads those values once, looks each up, and ORs the masks found (bitsets over rule numbers)
// with the mask of the rules that have no anchor. Then it checks the set rules in ascending
// order, so the first matching rule in configuration order still wins; the index only skips
// rules whose anchor condition fails. An anchor condition holds for every rule the index yields,
// so it is dropped from the rule's checks.
//
// Path patterns (contains and regex) cannot be looked up, but they can be ruled out together:
// one compiled regexp, the alternation of every rule's patterns, matches a path if and only if
// at least one of those rules' path conditions holds. When it does not match, every rule with a
// path pattern leaves the candidates, at the cost of one call into compiled code instead of one
// interpreted check per rule.

// smallMask is the number of mask words a request keeps on its stack: up to 256 rules.
const smallMask = 4

// ruleIndex maps request values to the masks of the rules they can match. Keys that stand for
// the same set of rules share one mask slice.
type ruleIndex struct {
	words      int      // mask length in 64-bit words
	always     []uint64 // rules without an anchor
	users      map[string][]uint64
	exact      map[string][]uint64
	prefix     map[string][]uint64
	prefixLens []int // the distinct lengths of the keys of prefix, ascending
	methods    map[string][]uint64
	fields     []fieldIndex
	// patterns matches a path when some rule's contains or regex condition holds; nil when no
	// rule has one. patternRules is the mask of those rules.
	patterns     *regexp.Regexp
	patternRules []uint64
	// keyed is set when some rule has an anchor or a path pattern; without, the candidates are
	// always.
	keyed bool
}

// fieldIndex maps the values of one header, cookie or query parameter to masks.
type fieldIndex struct {
	field  pair // kind, name and slot of the field; value and present are unused
	values map[string][]uint64
}

// indexRules builds the index of rules and drops from each rule the check of its anchor.
func indexRules(rules []rule) ruleIndex {
	words := (len(rules) + 63) / 64
	ix := ruleIndex{words: words, always: make([]uint64, words)}
	users, exact, prefix, methods := newMaskSet(words), newMaskSet(words), newMaskSet(words), newMaskSet(words)
	var fields []*maskSet
	lens := map[int]bool{}
	var patterns []string
	for i := 0; i < len(rules); i++ {
		r := &rules[i]
		if alternatives := pathAlternatives(&r.path); alternatives != nil {
			patterns = append(patterns, alternatives...)
			if ix.patternRules == nil {
				ix.patternRules = make([]uint64, words)
			}
			ix.patternRules[i>>6] |= 1 << uint(i&63)
		}
		switch {
		case r.users != nil:
			for user := range r.users {
				users.add(user, i)
			}
			r.checks = without(r.checks, checkUsers)
		case r.path.kind == pathExact:
			exact.add(r.path.value, i)
			r.checks = without(r.checks, checkPathExact)
		case anchorPair(r.pairs) >= 0:
			j := anchorPair(r.pairs)
			k := fieldIndexOf(&ix, &fields, r.pairs[j])
			fields[k].add(r.pairs[j].value, i)
			r.pairs = append(r.pairs[:j:j], r.pairs[j+1:]...)
			if len(r.pairs) == 0 {
				r.checks = without(r.checks, checkPairs)
			}
		case r.path.kind == pathPrefix:
			prefix.add(r.path.value, i)
			lens[len(r.path.value)] = true
			r.checks = without(r.checks, checkPathPrefix)
		case len(r.methods) > 0:
			for j := 0; j < len(r.methods); j++ {
				methods.add(r.methods[j], i)
			}
			r.checks = without(r.checks, checkMethods)
		default:
			ix.always[i>>6] |= 1 << uint(i&63)
		}
	}
	ix.users, ix.exact, ix.prefix, ix.methods = users.table(), exact.table(), prefix.table(), methods.table()
	for i := 0; i < len(fields); i++ {
		ix.fields[i].values = fields[i].table()
	}
	for n := range lens {
		ix.prefixLens = append(ix.prefixLens, n)
	}
	sort.Ints(ix.prefixLens)
	if patterns != nil {
		// Each part compiled alone in New, so the alternation compiles too, unless it is too
		// large for the regexp package: then the rules are simply checked one by one.
		if re, err := regexp.Compile(strings.Join(patterns, "|")); err == nil {
			ix.patterns = re
		} else {
			ix.patternRules = nil
		}
	}
	ix.keyed = ix.users != nil || ix.exact != nil || ix.prefix != nil || ix.methods != nil ||
		ix.fields != nil || ix.patterns != nil
	return ix
}

// pathAlternatives returns the regular expressions, one of which matches a path exactly when
// the contains or regex condition m holds; nil for other path conditions.
func pathAlternatives(m *pathMatch) []string {
	switch m.kind {
	case pathContains:
		out := make([]string, len(m.list))
		for i := 0; i < len(m.list); i++ {
			out[i] = regexp.QuoteMeta(m.list[i])
		}
		return out
	case pathRegex:
		return []string{"(?:" + m.re.String() + ")"}
	}
	return nil
}

// anchorPair returns the position of the first pair that asks for an exact value, or -1.
func anchorPair(pairs []pair) int {
	for i := 0; i < len(pairs); i++ {
		if !pairs[i].present {
			return i
		}
	}
	return -1
}

// fieldIndexOf returns the position in ix.fields, and in sets, of the index of the field of p,
// adding one when there is none.
func fieldIndexOf(ix *ruleIndex, sets *[]*maskSet, p pair) int {
	for i := 0; i < len(ix.fields); i++ {
		if f := &ix.fields[i].field; f.kind == p.kind && f.name == p.name {
			return i
		}
	}
	ix.fields = append(ix.fields, fieldIndex{field: pair{kind: p.kind, name: p.name, slot: p.slot}})
	*sets = append(*sets, newMaskSet(ix.words))
	return len(ix.fields) - 1
}

// without returns checks without check.
func without(checks []int, check int) []int {
	var out []int
	for i := 0; i < len(checks); i++ {
		if checks[i] != check {
			out = append(out, checks[i])
		}
	}
	return out
}

// maskSet builds a key → mask table in which keys with the same rules share one mask.
type maskSet struct {
	words   int
	keys    map[string]int // key → mask number
	masks   [][]uint64     // masks[0] is empty
	derived map[maskStep]int
}

// maskStep is a mask with one more rule: the mask number from, plus rule.
type maskStep struct {
	from, rule int
}

// newMaskSet returns an empty maskSet for masks of words words.
func newMaskSet(words int) *maskSet {
	return &maskSet{
		words:   words,
		keys:    map[string]int{},
		masks:   [][]uint64{make([]uint64, words)},
		derived: map[maskStep]int{},
	}
}

// add files rule under key.
func (s *maskSet) add(key string, rule int) {
	from := s.keys[key]
	bit := uint64(1) << uint(rule&63)
	if s.masks[from][rule>>6]&bit != 0 {
		return
	}
	step := maskStep{from: from, rule: rule}
	id, ok := s.derived[step]
	if !ok {
		m := make([]uint64, s.words)
		copy(m, s.masks[from])
		m[rule>>6] |= bit
		id = len(s.masks)
		s.masks = append(s.masks, m)
		s.derived[step] = id
	}
	s.keys[key] = id
}

// table returns the key → mask table, nil when empty.
func (s *maskSet) table() map[string][]uint64 {
	if len(s.keys) == 0 {
		return nil
	}
	t := make(map[string][]uint64, len(s.keys))
	for key, id := range s.keys {
		t[key] = s.masks[id]
	}
	return t
}

// candidates returns the mask of the rules the request of d can match, in small when it fits.
func candidates(ix *ruleIndex, d *decision, small *[smallMask]uint64) []uint64 {
	mask := small[:]
	if ix.words > smallMask {
		mask = make([]uint64, ix.words)
	}
	mask = mask[:ix.words]
	copy(mask, ix.always)
	req := d.req
	if ix.users != nil {
		if m := ix.users[userID(d)]; m != nil {
			orMask(mask, m)
		}
	}
	path := req.URL.Path
	if ix.exact != nil {
		if m := ix.exact[path]; m != nil {
			orMask(mask, m)
		}
	}
	for i := 0; i < len(ix.prefixLens) && ix.prefixLens[i] <= len(path); i++ {
		if m := ix.prefix[path[:ix.prefixLens[i]]]; m != nil {
			orMask(mask, m)
		}
	}
	if ix.methods != nil {
		if m := ix.methods[req.Method]; m != nil {
			orMask(mask, m)
		}
	}
	if ix.fields != nil {
		addFields(ix, d, mask)
	}
	if ix.patterns != nil && !ix.patterns.MatchString(path) {
		for i := 0; i < len(mask); i++ {
			mask[i] &^= ix.patternRules[i]
		}
	}
	return mask
}

// addFields adds to mask the rules filed under the values of the request's headers, cookies and
// query parameters, and keeps those values for the rules' checks.
func addFields(ix *ruleIndex, d *decision, mask []uint64) {
	for i := 0; i < len(ix.fields); i++ {
		f := &ix.fields[i].field
		v, ok := lookup(d.req, f.kind, f.name)
		if f.slot >= 0 {
			// One assignment each: Yaegi stores only the first element of a tuple
			// assignment into array elements.
			d.values[f.slot] = v
			d.found[f.slot] = ok
			d.resolved[f.slot] = true
		}
		if m := ix.fields[i].values[v]; ok && m != nil {
			orMask(mask, m)
		}
	}
}

// orMask adds the rules of m to mask.
func orMask(mask, m []uint64) {
	for i := 0; i < len(m); i++ {
		mask[i] |= m[i]
	}
}
