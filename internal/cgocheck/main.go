// Command cgocheck type-checks Go packages as they build for another
// system with cgo on — by default darwin/arm64 — on a machine that has no
// C toolchain for it. `make cross` runs it on vmnet/, vz/ and examples/vz,
// whose cgo files a CGO_ENABLED=0 cross build leaves out.
//
//	go run ./internal/cgocheck [-goos darwin] [-goarch arm64] [-tags t] [-v] [packages]
//
// It asks `go list -deps` (with GOOS, GOARCH and CGO_ENABLED=1) for the
// packages and everything they import, then type-checks them all from
// source with go/types in dependency order. A wrong call into another Go
// package (Code-Hex/vz, x/sys/unix, the standard library, our own) is an
// error, as the compiler would report it.
//
// Cgo itself cannot run here (it needs the target's C compiler and
// headers), so the check uses go/types' FakeImportC: every C.name is
// accepted with an unknown type, and nothing of C is verified by the type
// checker. To narrow the gap, cgocheck holds the named packages to a rule
// and checks it: every C.name their Go code uses must be declared in the
// cgo preamble or in a header of the package's own directory that the
// preamble includes — the package's C shim — apart from cgo's built-ins
// (C.CString, C.GoString, C.free, C.int, ...). Calls to shim functions
// must pass as many arguments as the prototype has parameters. The types
// of those arguments, and the shim's own C code, are not checked: only a
// build on macOS (clang and the SDK) does that.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

func main() {
	cfg := Config{GOOS: "darwin", GOARCH: "arm64"}
	flag.StringVar(&cfg.GOOS, "goos", cfg.GOOS, "target `GOOS`")
	flag.StringVar(&cfg.GOARCH, "goarch", cfg.GOARCH, "target `GOARCH`")
	flag.StringVar(&cfg.Tags, "tags", "", "comma-separated build `tags`")
	verbose := flag.Bool("v", false, "list the packages checked")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: cgocheck [flags] [packages]\n\n"+
			"Type-checks packages for another GOOS/GOARCH with cgo on, without a C toolchain.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg.Patterns = flag.Args()
	if len(cfg.Patterns) == 0 {
		cfg.Patterns = []string{"."}
	}
	if *verbose {
		cfg.Log = os.Stderr
	}
	diags, err := Check(cfg)
	for _, d := range diags {
		fmt.Fprintln(os.Stderr, d)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgocheck:", err)
		os.Exit(2)
	}
	if len(diags) > 0 {
		fmt.Fprintf(os.Stderr, "cgocheck: %d problem(s) for %s/%s with cgo\n", len(diags), cfg.GOOS, cfg.GOARCH)
		os.Exit(1)
	}
}

// Config says what to check.
type Config struct {
	GOOS, GOARCH string
	Tags         string
	// Patterns are package patterns for `go list`, relative to Dir.
	Patterns []string
	// Dir is the directory `go list` runs in ("" is the current one).
	Dir string
	// Log, if not nil, receives a line per package checked.
	Log io.Writer
}

// Diag is one problem found, with its position.
type Diag struct {
	Pos string
	Msg string
}

func (d Diag) String() string { return d.Pos + ": " + d.Msg }

// listed is the part of `go list -json` output used here.
type listed struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	ImportMap  map[string]string
	DepOnly    bool
	Error      *struct{ Err string }
}

// Check type-checks the packages cfg names, and their dependencies, for
// cfg.GOOS/cfg.GOARCH with cgo enabled. Problems in the code are returned
// as diagnostics; err is for failures to run the check at all.
func Check(cfg Config) ([]Diag, error) {
	pkgs, err := list(cfg)
	if err != nil {
		return nil, err
	}
	sizes := types.SizesFor("gc", cfg.GOARCH)
	if sizes == nil {
		return nil, fmt.Errorf("unknown GOARCH %q", cfg.GOARCH)
	}
	fset := token.NewFileSet()
	done := map[string]*types.Package{"unsafe": types.Unsafe}
	var diags []Diag
	for _, p := range pkgs {
		if p.ImportPath == "unsafe" || p.ImportPath == "C" {
			continue
		}
		if p.Error != nil {
			diags = append(diags, Diag{Pos: p.ImportPath, Msg: p.Error.Err})
			continue
		}
		if cfg.Log != nil && !p.DepOnly {
			fmt.Fprintf(cfg.Log, "cgocheck: %s (%d Go files, %d cgo files)\n", p.ImportPath, len(p.GoFiles), len(p.CgoFiles))
		}
		names := slices.Concat(p.GoFiles, p.CgoFiles)
		mode := parser.SkipObjectResolution
		if !p.DepOnly {
			mode |= parser.ParseComments // the cgo preambles
		}
		files := make([]*ast.File, 0, len(names))
		for _, n := range names {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, n), nil, mode)
			if err != nil {
				diags = append(diags, Diag{Pos: p.ImportPath, Msg: err.Error()})
				continue
			}
			files = append(files, f)
		}
		var errs []Diag
		conf := types.Config{
			Importer:    importer{pkgs: done, importMap: p.ImportMap},
			Sizes:       sizes,
			FakeImportC: true,
			// Dependencies only need their declarations.
			IgnoreFuncBodies: p.DepOnly,
			Error: func(err error) {
				var te types.Error
				if errors.As(err, &te) {
					errs = append(errs, Diag{Pos: te.Fset.Position(te.Pos).String(), Msg: te.Msg})
					return
				}
				errs = append(errs, Diag{Pos: p.ImportPath, Msg: err.Error()})
			},
		}
		tp, _ := conf.Check(p.ImportPath, fset, files, nil)
		done[p.ImportPath] = tp
		diags = append(diags, errs...)
		if !p.DepOnly && len(p.CgoFiles) > 0 {
			diags = append(diags, checkC(fset, p, files)...)
		}
	}
	return diags, nil
}

// list runs `go list -deps -json` for cfg and returns the packages in
// dependency order (dependencies first).
func list(cfg Config) ([]listed, error) {
	args := []string{"list", "-e", "-deps",
		"-json=ImportPath,Dir,GoFiles,CgoFiles,ImportMap,DepOnly,Error"}
	if cfg.Tags != "" {
		args = append(args, "-tags", cfg.Tags)
	}
	args = append(args, "--")
	args = append(args, cfg.Patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = cfg.Dir
	cmd.Env = append(os.Environ(), "GOOS="+cfg.GOOS, "GOARCH="+cfg.GOARCH, "CGO_ENABLED=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var pkgs []listed
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list: decode: %w", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("go list %s: no packages", strings.Join(cfg.Patterns, " "))
	}
	return pkgs, nil
}

// importer hands out the packages already checked, resolving vendored
// standard-library paths through the importing package's ImportMap.
type importer struct {
	pkgs      map[string]*types.Package
	importMap map[string]string
}

func (im importer) Import(path string) (*types.Package, error) {
	if p, ok := im.importMap[path]; ok {
		path = p
	}
	if p := im.pkgs[path]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("package %s not checked (failed, or missing from go list)", path)
}

// cgoBuiltins are the C names cgo provides itself, or that stand for C's
// basic types; they need no declaration in the shim.
var cgoBuiltins = map[string]bool{
	"CString": true, "CBytes": true, "GoString": true, "GoStringN": true, "GoBytes": true,
	"malloc": true, "free": true,
	"char": true, "schar": true, "uchar": true, "short": true, "ushort": true, "int": true, "uint": true,
	"long": true, "ulong": true, "longlong": true, "ulonglong": true, "float": true, "double": true,
	"complexfloat": true, "complexdouble": true, "size_t": true, "ssize_t": true,
	"int8_t": true, "int16_t": true, "int32_t": true, "int64_t": true,
	"uint8_t": true, "uint16_t": true, "uint32_t": true, "uint64_t": true,
	"intptr_t": true, "uintptr_t": true,
}

var (
	includeRE = regexp.MustCompile(`(?m)^\s*#\s*include\s+"([^"]+)"`)
	// protoRE matches a function prototype: a return type, the name, the
	// parameter list, and the semicolon.
	protoRE   = regexp.MustCompile(`(?m)^[ \t]*(?:[A-Za-z_][\w \t]*[\w*][ \t*]*)\b([A-Za-z_]\w*)[ \t]*\(([^()]*)\)[ \t]*;`)
	wordRE    = regexp.MustCompile(`[A-Za-z_]\w*`)
	commentRE = regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`)
)

// checkC holds the cgo files of a named package to the shim rule (see the
// package comment).
func checkC(fset *token.FileSet, p listed, files []*ast.File) []Diag {
	var diags []Diag
	for _, f := range files {
		preamble, ok := cgoPreamble(f)
		if !ok {
			continue
		}
		text := preamble
		for _, m := range includeRE.FindAllStringSubmatch(preamble, -1) {
			b, err := os.ReadFile(filepath.Join(p.Dir, m[1]))
			if err != nil {
				diags = append(diags, Diag{Pos: fset.Position(f.Package).String(),
					Msg: fmt.Sprintf("cgo preamble includes %q, which is not in the package directory: %v", m[1], err)})
				continue
			}
			text += "\n" + string(b)
		}
		text = commentRE.ReplaceAllString(text, "")
		declared := map[string]bool{}
		for _, w := range wordRE.FindAllString(text, -1) {
			declared[w] = true
		}
		params := map[string]int{}
		for _, m := range protoRE.FindAllStringSubmatch(text, -1) {
			params[m[1]] = countParams(m[2])
		}
		calls := map[*ast.SelectorExpr]*ast.CallExpr{}
		ast.Inspect(f, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok {
				if s, ok := c.Fun.(*ast.SelectorExpr); ok {
					calls[s] = c
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			s, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := s.X.(*ast.Ident); !ok || id.Name != "C" {
				return true
			}
			name := s.Sel.Name
			pos := fset.Position(s.Pos()).String()
			decl := name
			for _, pre := range []string{"struct_", "union_", "enum_"} {
				decl = strings.TrimPrefix(decl, pre)
			}
			if cgoBuiltins[name] {
				return true
			}
			if !declared[decl] {
				diags = append(diags, Diag{Pos: pos, Msg: fmt.Sprintf("C.%s is not declared in the cgo preamble "+
					"or the package's own headers: call the C shim, whose declarations can be checked here", name)})
				return true
			}
			if c := calls[s]; c != nil {
				if want, ok := params[name]; ok && want != len(c.Args) && !slices.Contains(
					[]string{"CString", "GoString"}, name) {
					diags = append(diags, Diag{Pos: pos, Msg: fmt.Sprintf("C.%s called with %d argument(s); "+
						"its prototype has %d", name, len(c.Args), want)})
				}
			}
			return true
		})
	}
	return diags
}

// cgoPreamble returns the comment above `import "C"` in f, if f imports C.
func cgoPreamble(f *ast.File) (string, bool) {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.IMPORT {
			continue
		}
		for _, s := range g.Specs {
			is := s.(*ast.ImportSpec)
			if is.Path.Value != `"C"` {
				continue
			}
			doc := is.Doc
			if doc == nil {
				doc = g.Doc
			}
			if doc == nil {
				return "", true
			}
			return doc.Text(), true
		}
	}
	return "", false
}

// countParams counts the parameters of a C parameter list; "" and "void"
// are none.
func countParams(list string) int {
	list = strings.TrimSpace(list)
	if list == "" || list == "void" {
		return 0
	}
	return strings.Count(list, ",") + 1
}
