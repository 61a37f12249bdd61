package mark

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
)

// The rule index lets a request evaluate only the rules it can match. Each rule that has a
// selective condition is filed under it — its anchor: its users, its exact path, an exact header,
// cookie or query value, its path prefix or its methods, in that order of preference. An anchor
// condition holds for every rule the index yields, so it is dropped from the rule's checks.
//
// For each key (a user, a path, a header value, …) New builds the key's candidate list: the rules
// filed under it merged with the rules without anchor, in configuration order. A request looks
// its keys up; when one matches, as is usual, its candidates are that list, when none matches,
// the list of the rules without anchor; only a request that matches several keys has its list
// merged from bitsets. It then checks the candidates in order, so the first matching rule in
// configuration order still wins.
//
// Paths are looked up only when they can match: two compiled regexps, alternations of the
// rules' path conditions (those anchored at the path's start, and the others), match a path if
// and only if at least one of the conditions holds, so a request on a path no rule names costs
// a call or two into compiled code. Path patterns (contains and regex)
// cannot be looked up, but they can be ruled out together the same way: each list comes in two
// versions, with the pattern rules and without, for a path their own alternation does not match.
// Under Yaegi, every interpreted expression of a called function costs an allocation per call,
// so these lists and regexps replace interpreted work on the request path.

// ruleIndex maps request values to the rules they can match. Keys that stand for the same set
// of rules share one entry.
type ruleIndex struct {
	words      int // mask length in 64-bit words
	always     []uint64
	none       *entry // the candidates of a request that no key matches: the rules without anchor
	users      map[string]*entry
	exact      map[string]*entry
	prefix     map[string]*entry
	prefixLens []int // the distinct lengths of the keys of prefix, ascending
	methods    map[string]*entry
	fields     []fieldIndex
	// patterns matches a path when some rule's contains or regex condition holds; nil when no
	// rule has one. patternRules is the mask of those rules.
	patterns     *regexp.Regexp
	patternRules []uint64
	// A path that some rule's path condition holds for, of whatever kind, is matched by
	// anchoredPaths (the conditions that can only match from the path's start: exact, prefix,
	// and regexes starting with ^) or by floatingPaths (the others). Either is matchNothing
	// when it would be empty; when they cannot be compiled (the alternations are too large),
	// anchoredPaths matches every path. (No tests of a flag or for nil on the request path:
	// fewer values for Yaegi.)
	anchoredPaths, floatingPaths *regexp.Regexp
	// byPath is set when some rule has a path condition, byOthers when some rule is filed
	// under a method, a header, a cookie or a query parameter.
	byPath, byOthers bool
	// needsID is set when the users index or a percent rule reads the user ID: it is then read
	// before the rules run.
	needsID bool
	// lists holds the candidate lists built so far, by mask, so that entries with the same rules
	// share them.
	lists map[string][]*rule
	rules []rule
}

// entry is what an index key stands for: the mask of the rules filed under it, and the
// candidate rules of a request that only this key matches, in configuration order — the rules
// of the mask and those without anchor — with and without the rules that have a path pattern.
type entry struct {
	mask       []uint64
	candidates []*rule
	noPatterns []*rule // candidates without the path pattern rules, for a path no pattern matches
}

// fieldIndex maps the values of one header, cookie or query parameter to entries.
type fieldIndex struct {
	field  pair // kind, name and slot of the field; value and present are unused
	values map[string]*entry
}

// indexRules builds the index of rules, drops from each rule the check of its anchor and sets
// how each rule is checked.
func indexRules(rules []rule) ruleIndex {
	words := (len(rules) + 63) / 64
	ix := ruleIndex{words: words, always: make([]uint64, words), lists: map[string][]*rule{}, rules: rules}
	users, exact, prefix, methods := newMaskSet(words), newMaskSet(words), newMaskSet(words), newMaskSet(words)
	var fields []*maskSet
	lens := map[int]bool{}
	var patterns, anchored, floating []string
	for i := 0; i < len(rules); i++ {
		r := &rules[i]
		if alternative, ok := anchoredAlternative(&r.path); ok {
			anchored = append(anchored, alternative)
		} else {
			floating = append(floating, pathAlternatives(&r.path)...)
		}
		if r.path.kind == pathContains || r.path.kind == pathRegex {
			patterns = append(patterns, pathAlternatives(&r.path)...)
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
	for n := range lens {
		ix.prefixLens = append(ix.prefixLens, n)
	}
	sort.Ints(ix.prefixLens)
	// Each part compiled alone in New, so the alternations compile too, unless they are too
	// large for the regexp package: then the keys are looked up and the rules checked one by one.
	if patterns != nil {
		if re, err := regexp.Compile(strings.Join(patterns, "|")); err == nil {
			ix.patterns = re
		} else {
			ix.patternRules = nil
		}
	}
	// The anchored alternation is tried at the path's start only, and an alternation of
	// literals with a common prefix is found with a substring search: both take a few hundred
	// nanoseconds where a single alternation of everything takes microseconds.
	// Sorted, so that alternatives with a common beginning stand next to each other: the regexp
	// package factors it out of them, and a path that differs from it is ruled out at once.
	// (The order of alternatives does not change whether a path matches.)
	sort.Strings(anchored)
	sort.Strings(floating)
	var errAnchored, errFloating error
	ix.anchoredPaths = matchNothing
	ix.floatingPaths = matchNothing
	if anchored != nil {
		ix.anchoredPaths, errAnchored = regexp.Compile("^(?:" + strings.Join(anchored, "|") + ")")
	}
	if floating != nil {
		ix.floatingPaths, errFloating = regexp.Compile(strings.Join(floating, "|"))
	}
	if errAnchored != nil || errFloating != nil {
		ix.anchoredPaths = matchEverything
	}
	for i := 0; i < len(rules); i++ {
		rules[i].how = howToCheck(&rules[i])
	}
	ix.none = newEntry(&ix, make([]uint64, words))
	ix.users, ix.exact, ix.prefix, ix.methods = users.table(&ix), exact.table(&ix), prefix.table(&ix), methods.table(&ix)
	for i := 0; i < len(fields); i++ {
		ix.fields[i].values = fields[i].table(&ix)
	}
	ix.byOthers = ix.methods != nil || ix.fields != nil
	ix.byPath = ix.exact != nil || ix.prefix != nil || ix.patterns != nil
	ix.needsID = ix.users != nil
	for i := 0; i < len(rules); i++ {
		ix.needsID = ix.needsID || rules[i].how == matchByPercent
	}
	ix.lists = nil // only needed while building
	return ix
}

// newEntry returns the entry of the rules of mask.
func newEntry(ix *ruleIndex, mask []uint64) *entry {
	all := make([]uint64, ix.words)
	for i := 0; i < ix.words; i++ {
		all[i] = mask[i] | ix.always[i]
	}
	e := &entry{mask: mask, candidates: ruleList(ix, all)}
	e.noPatterns = e.candidates
	if ix.patternRules != nil {
		for i := 0; i < ix.words; i++ {
			all[i] &^= ix.patternRules[i]
		}
		e.noPatterns = ruleList(ix, all)
	}
	return e
}

// ruleList returns the rules of mask in configuration order, shared with the lists built before
// for the same mask.
func ruleList(ix *ruleIndex, mask []uint64) []*rule {
	key := fmt.Sprint(mask)
	if list, ok := ix.lists[key]; ok {
		return list
	}
	var list []*rule
	for i := 0; i < len(ix.rules); i++ {
		if mask[i>>6]&(uint64(1)<<uint(i&63)) != 0 {
			list = append(list, &ix.rules[i])
		}
	}
	ix.lists[key] = list
	return list
}

// pathAlternatives returns the regular expressions, one of which matches a path exactly when
// the path condition m holds; nil for no path condition. Those of exact and prefix conditions
// match from the start of the path only when the caller anchors them.
func pathAlternatives(m *pathMatch) []string {
	switch m.kind {
	case pathExact:
		return []string{regexp.QuoteMeta(m.value) + "$"}
	case pathPrefix:
		return []string{regexp.QuoteMeta(m.value)}
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

// anchoredAlternative returns, for a path condition m that can only match from the start of a
// path (exact and prefix conditions, and regexes that begin with ^ in every alternative), the
// regular expression that matches a path from its start exactly when m holds, written without
// a ^ of its own: the alternation of these has one ^ for them all, and the regexp package runs
// it several times faster without the inner ones. The bool is false for any other condition.
func anchoredAlternative(m *pathMatch) (string, bool) {
	switch m.kind {
	case pathExact, pathPrefix:
		return pathAlternatives(m)[0], true
	case pathRegex:
		re, err := syntax.Parse(m.re.String(), syntax.Perl)
		if err != nil || !beginsWithText(re) {
			return "", false
		}
		return "(?:" + dropBeginText(re).String() + ")", true
	}
	return "", false
}

// beginsWithText reports whether every match of re starts at the beginning of the text.
func beginsWithText(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginText:
		return true
	case syntax.OpConcat, syntax.OpCapture:
		return len(re.Sub) > 0 && beginsWithText(re.Sub[0])
	case syntax.OpAlternate:
		for i := 0; i < len(re.Sub); i++ {
			if !beginsWithText(re.Sub[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// dropBeginText removes the ^ that starts every alternative of re, for a re that beginsWithText,
// and returns re.
func dropBeginText(re *syntax.Regexp) *syntax.Regexp {
	switch re.Op {
	case syntax.OpBeginText:
		return &syntax.Regexp{Op: syntax.OpEmptyMatch}
	case syntax.OpConcat:
		if re.Sub[0].Op == syntax.OpBeginText {
			re.Sub = re.Sub[1:] // not an empty match in its place, which hides what follows from the regexp package
		} else {
			re.Sub[0] = dropBeginText(re.Sub[0])
		}
	case syntax.OpCapture:
		re.Sub[0] = dropBeginText(re.Sub[0])
	case syntax.OpAlternate:
		for i := 0; i < len(re.Sub); i++ {
			re.Sub[i] = dropBeginText(re.Sub[i])
		}
	}
	return re
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

// table returns the key → entry table, nil when empty.
func (s *maskSet) table(ix *ruleIndex) map[string]*entry {
	if len(s.keys) == 0 {
		return nil
	}
	entries := make([]*entry, len(s.masks))
	t := make(map[string]*entry, len(s.keys))
	for key, id := range s.keys {
		if entries[id] == nil {
			entries[id] = newEntry(ix, s.masks[id])
		}
		t[key] = entries[id]
	}
	return t
}

// The request path. A request looks up each of its index keys; when exactly one matches, as is
// usual, the candidate rules are that key's list, built in New; when none matches, those of
// ruleIndex.none. Only a request that matches several keys has its candidates computed, by
// merging masks.

// pathKeys returns the candidates of the request of d, whose keys other than its path matched
// hit, once its path is looked up.
func pathKeys(ix *ruleIndex, d *decision, hit *entry) []*rule {
	path := d.req.URL.Path
	if e := ix.exact[path]; e != nil {
		hit = addEntry(ix, d, hit, e)
	}
	for i := 0; i < len(ix.prefixLens) && ix.prefixLens[i] <= len(path); i++ {
		if e := ix.prefix[path[:ix.prefixLens[i]]]; e != nil {
			hit = addEntry(ix, d, hit, e)
		}
	}
	if ix.patterns != nil && !ix.patterns.MatchString(path) {
		return hit.noPatterns
	}
	return hit.candidates
}

// mayMatchPath reports whether some rule's path condition may hold for path: always when the
// path regexps could not be compiled.
func mayMatchPath(ix *ruleIndex, path string) bool {
	return ix.anchoredPaths.MatchString(path) || ix.floatingPaths.MatchString(path)
}

// addEntry returns the entry of a request that matched the keys of hit (ix.none for none yet)
// and then the key of e.
func addEntry(ix *ruleIndex, d *decision, hit, e *entry) *entry {
	if hit == ix.none {
		return e
	}
	return mergedEntry(ix, d)
}

// otherKeys looks up the method and the header, cookie and query values of the request of d,
// keeps those values for the rules' checks, and returns the entry of the keys matched so far,
// hit, and those.
func otherKeys(ix *ruleIndex, d *decision, hit *entry) *entry {
	if e := ix.methods[d.req.Method]; e != nil {
		hit = addEntry(ix, d, hit, e)
	}
	for i := 0; i < len(ix.fields); i++ {
		v, ok := fieldValue(d, &ix.fields[i].field)
		if e := ix.fields[i].values[v]; ok && e != nil {
			hit = addEntry(ix, d, hit, e)
		}
	}
	return hit
}

// mergedEntry returns the entry of a request that matches several index keys: the union of
// their masks. (Its lists are built for the request: this is the rare case.)
func mergedEntry(ix *ruleIndex, d *decision) *entry {
	mask := make([]uint64, ix.words)
	path := d.req.URL.Path
	orEntry(mask, ix.users[d.identity])
	orEntry(mask, ix.exact[path])
	for i := 0; i < len(ix.prefixLens) && ix.prefixLens[i] <= len(path); i++ {
		orEntry(mask, ix.prefix[path[:ix.prefixLens[i]]])
	}
	orEntry(mask, ix.methods[d.req.Method])
	for i := 0; i < len(ix.fields); i++ {
		if v, ok := fieldValue(d, &ix.fields[i].field); ok {
			orEntry(mask, ix.fields[i].values[v])
		}
	}
	build := *ix
	build.lists = map[string][]*rule{}
	return newEntry(&build, mask)
}

// orEntry adds the rules of e, if any, to mask.
func orEntry(mask []uint64, e *entry) {
	if e == nil {
		return
	}
	for i := 0; i < len(mask); i++ {
		mask[i] |= e.mask[i]
	}
}

// matchNothing is a regexp that matches no path: nothing can precede the start of the text.
var matchNothing = regexp.MustCompile(`a^`)

// matchEverything is a regexp that matches every path.
var matchEverything = regexp.MustCompile(``)
