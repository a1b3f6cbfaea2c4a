package dnsproxy

import (
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// maxCNAMEs bounds the CNAME chain followed from the name asked.
const maxCNAMEs = 8

// question is the one question of a query.
type question struct {
	id   uint16
	name string // canonical
	typ  dnsmessage.Type
}

// parseQuery reads the header and the one question of a query; ok is false
// for anything else (a response, no or several questions, garbage).
func parseQuery(msg []byte) (question, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return question{}, false
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return question{}, false
	}
	return question{id: h.ID, name: Canonical(qs[0].Name.String()), typ: qs[0].Type}, true
}

// answer is one address an answer binds to the name asked.
type answer struct {
	addr netip.Addr
	ttl  time.Duration
}

// addresses reads the answer to q: the A and AAAA records of q's name and
// of the names its CNAME chain leads to. A response to another question, an
// error response or an unparseable one yields nothing.
func addresses(q question, msg []byte) []answer {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.RCode != dnsmessage.RCodeSuccess {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || Canonical(qs[0].Name.String()) != q.name || qs[0].Type != q.typ {
		return nil
	}
	rrs, err := p.AllAnswers()
	if err != nil {
		return nil
	}
	chain := map[string]bool{q.name: true}
	for range maxCNAMEs {
		grew := false
		for _, rr := range rrs {
			if c, ok := rr.Body.(*dnsmessage.CNAMEResource); ok && chain[Canonical(rr.Header.Name.String())] {
				if t := Canonical(c.CNAME.String()); !chain[t] {
					chain[t], grew = true, true
				}
			}
		}
		if !grew {
			break
		}
	}
	var out []answer
	for _, rr := range rrs {
		if !chain[Canonical(rr.Header.Name.String())] {
			continue
		}
		ttl := time.Duration(rr.Header.TTL) * time.Second
		switch b := rr.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, answer{netip.AddrFrom4(b.A), ttl})
		case *dnsmessage.AAAAResource:
			out = append(out, answer{netip.AddrFrom16(b.AAAA).Unmap(), ttl})
		}
	}
	return out
}
