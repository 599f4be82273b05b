package registry

import (
	"os"
	"path/filepath"
	"testing"
)

// Generation grows with every table Reload puts in force, and only then.
func TestGenerationFollowsReload(t *testing.T) {
	devs := loadGood(t).Devices()
	path := filepath.Join(t.TempDir(), "devices.yaml")
	if err := Write(path, devs); err != nil {
		t.Fatal(err)
	}
	r, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	g0 := r.Generation()
	if g0 == 0 {
		t.Fatal("Generation 0 after Load (0 is reserved for 'none')")
	}
	if _, err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	g1 := r.Generation()
	if g1 <= g0 {
		t.Fatalf("Generation %d after Reload, was %d", g1, g0)
	}
	// A refused file keeps the table, and the generation.
	if err := os.WriteFile(path, []byte("devices: [{id: x}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(); err == nil {
		t.Fatal("bad file reloaded")
	}
	if g := r.Generation(); g != g1 {
		t.Fatalf("Generation %d after a failed Reload, want %d", g, g1)
	}
}
