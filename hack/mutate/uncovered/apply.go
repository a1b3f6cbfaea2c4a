package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"slices"
	"strings"
)

// tokenMutations is gremlins v0.6.0's table (internal/engine/mappings.go):
// for each mutator type, the token it replaces and the token it puts there.
// gremlins applies a type to every token of its row, in any of the AST nodes
// mutableNode lists: INVERT_NEGATIVES and ARITHMETIC_BASE both make any `-`
// (unary or binary) a `+`, which for a unary minus removes the negation.
var tokenMutations = map[string]map[token.Token]token.Token{
	"ARITHMETIC_BASE": {
		token.ADD: token.SUB,
		token.MUL: token.QUO,
		token.QUO: token.MUL,
		token.REM: token.MUL,
		token.SUB: token.ADD,
	},
	"CONDITIONALS_BOUNDARY": {
		token.GEQ: token.GTR,
		token.GTR: token.GEQ,
		token.LEQ: token.LSS,
		token.LSS: token.LEQ,
	},
	"CONDITIONALS_NEGATION": {
		token.EQL: token.NEQ,
		token.GEQ: token.LSS,
		token.GTR: token.LEQ,
		token.LEQ: token.GTR,
		token.LSS: token.GEQ,
		token.NEQ: token.EQL,
	},
	"INCREMENT_DECREMENT": {
		token.DEC: token.INC,
		token.INC: token.DEC,
	},
	"INVERT_ASSIGNMENTS": {
		token.ADD_ASSIGN: token.SUB_ASSIGN,
		token.MUL_ASSIGN: token.QUO_ASSIGN,
		token.QUO_ASSIGN: token.MUL_ASSIGN,
		token.REM_ASSIGN: token.REM_ASSIGN, // sic: gremlins' table leaves %= as it is
		token.SUB_ASSIGN: token.ADD_ASSIGN,
	},
	"INVERT_BITWISE": {
		token.AND:     token.OR,
		token.OR:      token.AND,
		token.XOR:     token.AND,
		token.AND_NOT: token.AND,
		token.SHL:     token.SHR,
		token.SHR:     token.SHL,
	},
	"INVERT_BWASSIGN": {
		token.AND_ASSIGN:     token.OR_ASSIGN,
		token.OR_ASSIGN:      token.AND_ASSIGN,
		token.XOR_ASSIGN:     token.AND_ASSIGN,
		token.AND_NOT_ASSIGN: token.AND_ASSIGN,
		token.SHL_ASSIGN:     token.SHR_ASSIGN,
		token.SHR_ASSIGN:     token.SHL_ASSIGN,
	},
	"INVERT_LOGICAL": {
		token.LAND: token.LOR,
		token.LOR:  token.LAND,
	},
	"INVERT_LOOPCTRL": {
		token.BREAK:    token.CONTINUE,
		token.CONTINUE: token.BREAK,
	},
	"INVERT_NEGATIVES": {
		token.SUB: token.ADD,
	},
	"REMOVE_SELF_ASSIGNMENTS": {
		token.ADD_ASSIGN:     token.ASSIGN,
		token.AND_ASSIGN:     token.ASSIGN,
		token.AND_NOT_ASSIGN: token.ASSIGN,
		token.MUL_ASSIGN:     token.ASSIGN,
		token.OR_ASSIGN:      token.ASSIGN,
		token.QUO_ASSIGN:     token.ASSIGN,
		token.REM_ASSIGN:     token.ASSIGN,
		token.SHL_ASSIGN:     token.ASSIGN,
		token.SHR_ASSIGN:     token.ASSIGN,
		token.SUB_ASSIGN:     token.ASSIGN,
		token.XOR_ASSIGN:     token.ASSIGN,
	},
}

// mutableNode returns the token of n that gremlins mutates and its position,
// for the node kinds gremlins mutates (internal/engine/node.go).
func mutableNode(n ast.Node) (token.Token, token.Pos, bool) {
	switch n := n.(type) {
	case *ast.AssignStmt:
		return n.Tok, n.TokPos, true
	case *ast.BinaryExpr:
		return n.Op, n.OpPos, true
	case *ast.BranchStmt:
		return n.Tok, n.TokPos, true
	case *ast.IncDecStmt:
		return n.Tok, n.TokPos, true
	case *ast.UnaryExpr:
		return n.Op, n.OpPos, true
	}
	return token.ILLEGAL, token.NoPos, false
}

// mutation is one mutant applied to a source file.
type mutation struct {
	From, To token.Token
	Src      []byte // the mutated source
}

// apply makes the mutant of type typ at line:col (1-based, col in bytes, as
// gremlins reports it) of src, the source of file name. It finds the node
// gremlins would mutate there and checks that its token is one typ
// replaces: anything else (no such node, another token) is an error, as is a
// mutated source whose tokens are not the original's with that one token
// replaced.
func apply(name string, src []byte, line, col int, typ string) (mutation, error) {
	at := fmt.Sprintf("%s:%d:%d %s", name, line, col, typ)
	table, ok := tokenMutations[typ]
	if !ok {
		return mutation{}, fmt.Errorf("%s: unknown mutator type", at)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return mutation{}, fmt.Errorf("%s: %w", at, err)
	}
	var (
		found bool
		tok   token.Token
		pos   token.Pos
	)
	ast.Inspect(f, func(n ast.Node) bool {
		if found || n == nil {
			return !found
		}
		if t, p, ok := mutableNode(n); ok {
			if pp := fset.Position(p); pp.Line == line && pp.Column == col {
				found, tok, pos = true, t, p
			}
		}
		return !found
	})
	if !found {
		return mutation{}, fmt.Errorf("%s: no operator gremlins mutates at this position (%s)", at, tokenAt(src, fset.File(f.Pos()), line, col))
	}
	to, ok := table[tok]
	if !ok {
		return mutation{}, fmt.Errorf("%s: the token here is %q, which %s does not mutate (it mutates %s)", at, tok, typ, tokenList(table))
	}
	off := fset.Position(pos).Offset
	if !strings.HasPrefix(string(src[off:]), tok.String()) {
		return mutation{}, fmt.Errorf("%s: %q is not at byte offset %d", at, tok, off)
	}
	want, err := tokens(name, src)
	if err != nil {
		return mutation{}, fmt.Errorf("%s: %w", at, err)
	}
	idx := slices.IndexFunc(want, func(t lexeme) bool { return t.off == off })
	if idx < 0 || want[idx].tok != tok {
		return mutation{}, fmt.Errorf("%s: the scanner finds no %q at byte offset %d", at, tok, off)
	}
	want[idx].tok, want[idx].lit = to, ""
	// The new token in place of the old one, with a space on either side
	// when it would otherwise run into its neighbours (`2**p` made `2/*p`
	// would open a comment): the first spelling whose tokens are exactly
	// the original's with this one replaced.
	for _, spell := range []string{to.String(), " " + to.String(), to.String() + " ", " " + to.String() + " "} {
		out := make([]byte, 0, len(src)+2)
		out = append(out, src[:off]...)
		out = append(out, spell...)
		out = append(out, src[off+len(tok.String()):]...)
		got, err := tokens(name, out)
		if err == nil && sameTokens(got, want) {
			return mutation{From: tok, To: to, Src: out}, nil
		}
	}
	return mutation{}, fmt.Errorf("%s: no spelling of %q in place of %q keeps the other tokens", at, to, tok)
}

type lexeme struct {
	off int
	tok token.Token
	lit string
}

func tokens(name string, src []byte) ([]lexeme, error) {
	fset := token.NewFileSet()
	file := fset.AddFile(name, -1, len(src))
	var errs scanner.ErrorList
	var s scanner.Scanner
	s.Init(file, src, func(pos token.Position, msg string) { errs.Add(pos, msg) }, 0)
	var out []lexeme
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		if tok.IsOperator() || tok.IsKeyword() {
			lit = ""
		}
		out = append(out, lexeme{off: file.Offset(pos), tok: tok, lit: lit})
	}
	return out, errs.Err()
}

// sameTokens compares token streams, not their offsets.
func sameTokens(a, b []lexeme) bool {
	return slices.EqualFunc(a, b, func(x, y lexeme) bool { return x.tok == y.tok && x.lit == y.lit })
}

func tokenList(table map[token.Token]token.Token) string {
	var s []string
	for t := range table {
		s = append(s, fmt.Sprintf("%q", t))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// tokenAt describes what is at line:col, for an error message.
func tokenAt(src []byte, f *token.File, line, col int) string {
	if line < 1 || line > f.LineCount() {
		return fmt.Sprintf("the file has %d lines", f.LineCount())
	}
	start := f.Offset(f.LineStart(line))
	end := len(src)
	if line < f.LineCount() {
		end = f.Offset(f.LineStart(line+1)) - 1
	}
	text := strings.TrimRight(string(src[start:end]), "\r\n")
	if col < 1 || col > len(text)+1 {
		return fmt.Sprintf("line %d has %d bytes", line, len(text))
	}
	rest := text[col-1:]
	if len(rest) > 20 {
		rest = rest[:20]
	}
	return fmt.Sprintf("found %q", rest)
}
