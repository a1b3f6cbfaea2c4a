package xds

// The sidecar is never looser than Envoy: whenever decode + Build accept a
// resource, Envoy's own types (go-control-plane) read the same bytes and
// Envoy's validation (protoc-gen-validate's ValidateAll, on the resource and
// on every typed_config in it, as Envoy validates an extension's config when
// it instantiates it) passes. The sidecar may refuse more than Envoy, never
// less. Resources are mutated one at a time inside a whole, consistent set,
// so that Build judges them as it would in a response.

import (
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// base is a consistent set of resources the mutations go into.
type base struct {
	name   string
	envoy  envoySet  // go-control-plane's types: the seeds' bytes
	subset Resources // as decoded
}

// differentialBases: the control plane's golden output, and the builders'.
func differentialBases(t testing.TB) []base {
	t.Helper()
	var out []base
	dirs, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if d.IsDir() {
			for _, gs := range goldenSets(t, filepath.Join(goldenDir, d.Name())) {
				out = append(out, base{name: gs.name, envoy: gs.envoy, subset: gs.envoy.mustSubset(t)})
			}
		}
	}
	s := mesh{services: []string{"server.demo", "other.demo"}, httpEgress: true}.envoy(t)
	out = append(out, base{name: "builders", envoy: s, subset: s.mustSubset(t)})
	// The [l7] additions, with what [gamma] will emit: every new field set.
	s = mesh{services: []string{"server.demo", "other.demo", "third.demo"}, httpEgress: true, l7: true}.envoy(t)
	s[model.RouteType]["outbound|80|server.demo"] = gammaRoutes(t)
	out = append(out, base{name: "builders/l7", envoy: s, subset: s.mustSubset(t)})
	// The [gamma] route fields, every one set (gamma_test.go).
	s = gammaSet(t)
	out = append(out, base{name: "builders/gamma", envoy: s, subset: s.mustSubset(t)})
	for _, b := range out {
		if _, err := Build(td, b.subset); err != nil {
			t.Fatalf("base %s is not accepted: %v", b.name, err)
		}
	}
	return out
}

// neverLooser decodes b as a resource of type typ, puts it into the base
// set (replacing the resource of its name) and, if Build accepts the set,
// fails t unless Envoy accepts b too. It reports whether the sidecar
// accepted.
func neverLooser(t testing.TB, b base, typ string, raw []byte) bool {
	m, err := decode(typ, &anypb.Any{TypeUrl: typ, Value: raw})
	if err != nil {
		return false
	}
	res := maps.Clone(b.subset)
	res[typ] = maps.Clone(res[typ])
	if res[typ] == nil {
		res[typ] = map[string]proto.Message{}
	}
	res[typ][resourceName(m)] = m
	if _, err := Build(td, res); err != nil {
		return false
	}
	if err := envoyRefuses(typ, raw); err != nil {
		t.Errorf("%s: the sidecar accepts this %s, Envoy refuses it: %v\n%s", b.name, kindName(typ), err, prototext.Format(m))
	}
	return true
}

// envoyRefuses says why Envoy would refuse resource bytes of type typ; nil
// if it accepts them.
func envoyRefuses(typ string, raw []byte) error {
	a := &anypb.Any{TypeUrl: typ, Value: raw}
	m, err := a.UnmarshalNew() // the global registry: go-control-plane's type
	if err != nil {
		return fmt.Errorf("proto.Unmarshal: %w", err)
	}
	if strings.HasPrefix(string(m.ProtoReflect().Descriptor().FullName()), subsetPrefix) {
		return fmt.Errorf("%s resolved to the subset's type, not Envoy's", typ)
	}
	return envoyValid(m)
}

// envoyValid runs Envoy's validation on m and on every Any payload in it.
func envoyValid(m proto.Message) error {
	v, ok := m.(interface{ ValidateAll() error })
	if !ok {
		return fmt.Errorf("%T has no ValidateAll", m)
	}
	if err := v.ValidateAll(); err != nil {
		return err
	}
	var err error
	eachAny(m.ProtoReflect(), func(a *anypb.Any) bool {
		var p proto.Message
		if p, err = a.UnmarshalNew(); err != nil {
			err = fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
			return false
		}
		if err = envoyValid(p); err != nil {
			err = fmt.Errorf("typed_config %s: %w", a.GetTypeUrl(), err)
			return false
		}
		return true
	})
	return err
}

// eachAny calls fn with every Any in m's tree (not inside Anys) until it
// returns false.
func eachAny(m protoreflect.Message, fn func(*anypb.Any) bool) bool {
	if a, ok := m.Interface().(*anypb.Any); ok {
		return fn(a)
	}
	more := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					more = eachAny(mv.Message(), fn)
					return more
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; more && i < v.List().Len(); i++ {
					more = eachAny(v.List().Get(i).Message(), fn)
				}
			}
		case fd.Message() != nil:
			more = eachAny(v.Message(), fn)
		}
		return more
	})
	return more
}

// FuzzSubsetNeverLooserThanEnvoy mutates the bytes of the golden and the
// builders' resources of every kind: whatever the sidecar accepts, Envoy
// must accept.
func FuzzSubsetNeverLooserThanEnvoy(f *testing.F) {
	bases := differentialBases(f)
	for i, b := range bases {
		for ti, typ := range subscribeOrder {
			for _, name := range slices.Sorted(maps.Keys(b.envoy[typ])) {
				raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(b.envoy[typ][name])
				if err != nil {
					f.Fatal(err)
				}
				f.Add(uint8(i), uint8(ti), raw)
			}
		}
	}
	f.Fuzz(func(t *testing.T, bi, ti uint8, raw []byte) {
		neverLooser(t, bases[int(bi)%len(bases)], subscribeOrder[int(ti)%len(subscribeOrder)], raw)
	})
}

// TestSubsetNeverLooserThanEnvoy is the deterministic counterpart of the
// fuzz target: every single-step mutation of every golden resource, Any
// payloads included, checked the same way.
func TestSubsetNeverLooserThanEnvoy(t *testing.T) {
	var accepted, refused int
	done := map[string]bool{} // the same resource in several bases is mutated once
	for _, b := range differentialBases(t) {
		for _, typ := range subscribeOrder {
			for _, name := range slices.Sorted(maps.Keys(b.subset[typ])) {
				m := b.subset[typ][name]
				key, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				if done[typ+string(key)] {
					continue
				}
				done[typ+string(key)] = true
				for _, v := range variants(m.ProtoReflect()) {
					raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(v.Interface())
					if err != nil {
						t.Fatal(err)
					}
					if neverLooser(t, b, typ, raw) {
						accepted++
					} else {
						refused++
					}
				}
			}
		}
	}
	t.Logf("%d mutations accepted by the sidecar (and Envoy), %d refused", accepted, refused)
	if accepted == 0 || refused == 0 {
		t.Fatalf("%d accepted, %d refused: the mutations do not exercise the checks", accepted, refused)
	}
}

// variants returns every single-step mutation of m, each a new message (m
// is not changed): a field cleared or set to boundary values, an unset
// message field set empty, a list item appended, dropped or mutated (the
// first and the last), a map entry dropped, added or mutated — recursively,
// and inside Any payloads of the subset (decoded, mutated, encoded again).
func variants(m protoreflect.Message) []protoreflect.Message {
	var out []protoreflect.Message
	with := func(edit func(c protoreflect.Message)) {
		c := proto.Clone(m.Interface()).ProtoReflect()
		edit(c)
		out = append(out, c)
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		for _, p := range anyPayloads(a) {
			with(func(c protoreflect.Message) { c.Interface().(*anypb.Any).Value = p })
		}
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if m.Has(fd) {
			with(func(c protoreflect.Message) { c.Clear(fd) })
		}
		switch {
		case fd.IsMap():
			mp := m.Get(fd).Map()
			with(func(c protoreflect.Message) {
				cm := c.Mutable(fd).Map()
				cm.Set(protoreflect.ValueOfString("").MapKey(), cm.NewValue())
			})
			for _, k := range mapKeys(mp) {
				with(func(c protoreflect.Message) { c.Mutable(fd).Map().Clear(k) })
				for _, v := range values(fd.MapValue(), mp.Get(k)) {
					with(func(c protoreflect.Message) { c.Mutable(fd).Map().Set(k, v) })
				}
			}
		case fd.IsList():
			l := m.Get(fd).List()
			with(func(c protoreflect.Message) {
				cl := c.Mutable(fd).List()
				cl.Append(cl.NewElement())
			})
			for _, j := range slices.Compact([]int{0, l.Len() - 1}) {
				if l.Len() == 0 {
					break
				}
				with(func(c protoreflect.Message) {
					cl := c.Mutable(fd).List()
					for k := j; k < cl.Len()-1; k++ {
						cl.Set(k, cl.Get(k+1))
					}
					cl.Truncate(cl.Len() - 1)
				})
				for _, v := range values(fd, l.Get(j)) {
					with(func(c protoreflect.Message) { c.Mutable(fd).List().Set(j, v) })
				}
			}
		case fd.Message() != nil && !m.Has(fd):
			with(func(c protoreflect.Message) { c.Set(fd, c.NewField(fd)) })
		default:
			for _, v := range values(fd, m.Get(fd)) {
				with(func(c protoreflect.Message) { c.Set(fd, v) })
			}
		}
	}
	return out
}

// values are the mutations of one value of field fd: a message's variants,
// or boundary values of a scalar.
func values(fd protoreflect.FieldDescriptor, v protoreflect.Value) []protoreflect.Value {
	var out []protoreflect.Value
	switch fd.Kind() {
	case protoreflect.MessageKind:
		for _, m := range variants(v.Message()) {
			out = append(out, protoreflect.ValueOfMessage(m))
		}
	case protoreflect.BoolKind:
		out = append(out, protoreflect.ValueOfBool(!v.Bool()))
	case protoreflect.StringKind:
		for _, s := range []string{"", "a", "/", "a\x00b", "a\nb", "*", strings.Repeat("a", 256)} {
			out = append(out, protoreflect.ValueOfString(s))
		}
	case protoreflect.BytesKind:
		out = append(out, protoreflect.ValueOfBytes(nil), protoreflect.ValueOfBytes([]byte("x")))
	case protoreflect.Uint32Kind:
		for _, u := range []uint32{0, 1, 128, 129, 199, 200, 599, 600, 65535, 65536, math.MaxUint32} {
			out = append(out, protoreflect.ValueOfUint32(u))
		}
	case protoreflect.Uint64Kind:
		for _, u := range []uint64{0, 1, math.MaxUint64} {
			out = append(out, protoreflect.ValueOfUint64(u))
		}
	case protoreflect.Int32Kind:
		for _, i := range []int32{0, -1, 1, 999_999_999, 1_000_000_000, math.MinInt32, math.MaxInt32} {
			out = append(out, protoreflect.ValueOfInt32(i))
		}
	case protoreflect.Int64Kind:
		for _, i := range []int64{0, -1, 1, 315_576_000_000, 315_576_000_001, math.MinInt64, math.MaxInt64} {
			out = append(out, protoreflect.ValueOfInt64(i))
		}
	case protoreflect.DoubleKind:
		for _, d := range []float64{0, -1, 0.5, 1, 2, 100, 100.5, math.NaN(), math.Inf(1)} {
			out = append(out, protoreflect.ValueOfFloat64(d))
		}
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		for i := range vals.Len() {
			out = append(out, protoreflect.ValueOfEnum(vals.Get(i).Number()))
		}
		out = append(out, protoreflect.ValueOfEnum(vals.Get(vals.Len()-1).Number()+1))
	}
	return out
}

// anyPayloads are the encoded variants of an Any's payload, when it is a
// message of the subset.
func anyPayloads(a *anypb.Any) [][]byte {
	p, err := subsetMessage(a.GetTypeUrl())
	if err != nil || proto.Unmarshal(a.GetValue(), p) != nil {
		return nil
	}
	var out [][]byte
	for _, v := range variants(p.ProtoReflect()) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v.Interface())
		if err == nil {
			out = append(out, b)
		}
	}
	return out
}
