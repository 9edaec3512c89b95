package horde_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A fresh clone must pass its own tests with nothing beside it, so no test
// may name a path outside its module: neither a relative path that climbs
// out of it nor an absolute one beside it on this machine. This reads every _test.go file of the repository (each against
// its own module: bench/ has one) and fails on any string literal, or
// filepath.Join/path.Join of leading literals, that resolves there.
func TestTestsReadNothingOutsideTheModule(t *testing.T) {
	root := moduleRoot(t)
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		for _, p := range escapingPaths(t, path, nearestModule(root, filepath.Dir(path))) {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s: %s", rel, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// This file is among them, so the walk reached the tests.
	if files < 10 {
		t.Fatalf("read %d test files under %s: the walk missed the repository", files, root)
	}
}

// The check itself: it must catch the forms that once broke a fresh clone.
func TestEscapeCheckCatchesPathsOutside(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "repo")
	pkg := filepath.Join(mod, "horde", "rediscache")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	// The forms that once broke a fresh clone, kept as test data so that no
	// Go file of the repository names them.
	sample, err := os.ReadFile(filepath.Join("testdata", "escape", "x_test.go.txt"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(sample), "ABSOLUTE_BESIDE", filepath.Join(dir, "beside", "fixtures"), 1)
	file := filepath.Join(pkg, "x_test.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := escapingPaths(t, file, mod)
	if len(got) != 4 {
		t.Fatalf("found %d paths outside the module, want 4 (lines 2-5):\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, p := range got {
		if want := "line " + strconv.Itoa(i+2) + ":"; !strings.HasPrefix(p, want) {
			t.Errorf("finding %d = %q, want it on %s", i, p, want)
		}
	}
}

// moduleRoot is the directory of this module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// nearestModule is the closest directory from dir up to root holding a
// go.mod: the module a package belongs to.
func nearestModule(root, dir string) string {
	for d := dir; d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return root
}

// escapingPaths lists the paths named in file that resolve outside mod:
// relative ones against the file's directory (where go test runs it),
// absolute ones when they lie beside mod on this machine.
func escapingPaths(t *testing.T, file, mod string) []string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(file)
	var found []string
	report := func(pos token.Pos, path string) {
		if outside(mod, dir, path) {
			found = append(found, "line "+strconv.Itoa(fset.Position(pos).Line)+": "+strconv.Quote(path)+" is outside the module")
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if isJoin(n.Fun) {
				if p, ok := leadingLiterals(n.Args); ok {
					report(n.Pos(), p)
				}
				return false // its literals are judged as the join, not one by one
			}
		case *ast.BasicLit:
			if s, ok := stringLit(n); ok && strings.Contains(s, "/") || s == ".." {
				report(n.Pos(), s)
			}
		}
		return true
	})
	return found
}

func isJoin(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Join" {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && (pkg.Name == "filepath" || pkg.Name == "path")
}

// leadingLiterals joins the string literals a Join call starts with; a
// call starting with anything else (t.TempDir()) is anchored elsewhere.
func leadingLiterals(args []ast.Expr) (string, bool) {
	var parts []string
	for _, a := range args {
		lit, ok := a.(*ast.BasicLit)
		if !ok {
			break
		}
		s, ok := stringLit(lit)
		if !ok {
			break
		}
		parts = append(parts, s)
	}
	return filepath.Join(parts...), len(parts) > 0
}

func stringLit(lit *ast.BasicLit) (string, bool) {
	if lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// outside reports whether path, named in a file of dir, lies outside mod.
// A relative path counts when it climbs out of mod. An absolute one counts
// only beside mod (under mod's parent): absolute strings in tests are
// mostly URL paths ("/api/v2/workers"), and a path elsewhere is not this
// checkout's business.
func outside(mod, dir, path string) bool {
	if filepath.IsAbs(path) {
		parent := filepath.Dir(mod)
		return within(parent, path) && !within(mod, path)
	}
	if !strings.HasPrefix(filepath.ToSlash(filepath.Clean(path)), "..") {
		return false
	}
	return !within(mod, filepath.Join(dir, path))
}

func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
