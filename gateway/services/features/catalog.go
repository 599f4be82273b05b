// Package features activates seasonal features on vehicles. A catalog
// (features.yaml) lists each feature with its season (winter, summer or
// all-year) and the command that switches it; customers are entitled to
// features (customers.yaml / API). A Scheduler computes each vehicle's
// desired state for a date — entitled, inside the rollout percentage, not
// rolled back, and in season for the vehicle's hemisphere (last known
// latitude, else the registered region) — and sends activation or
// deactivation commands through NATS (vehicle.cmd.{vin}), each decision
// with its own unguessable command id stored before it is sent (see
// newCmdID). The dispatcher's result (vehicle.cmdresult.{vin}) closes the
// change; an applied one is written to the customer's profile. Time is injected (svc.Clock),
// so a test walks a year in seconds.
package features

import (
	"fmt"
	"os"
	"time"

	"github.com/telegate/telegate/gateway/services/svc"
)

// Seasons.
const (
	Winter  = "winter"
	Summer  = "summer"
	AllYear = "all-year"
)

// Feature is one catalog entry.
type Feature struct {
	ID     string `yaml:"id" json:"id"`
	Name   string `yaml:"name" json:"name"`
	Season string `yaml:"season" json:"season"`
	// Rollout is the percentage (0-100) of entitled vehicles that get the
	// feature; default 100. The API can change it at run time.
	Rollout *int    `yaml:"rollout" json:"rollout,omitempty"`
	Command Command `yaml:"command" json:"command"`
}

// Command is the command payload that switches the feature. The scheduler
// adds the parameters feature=<id> and state=on|off.
type Command struct {
	Name   string            `yaml:"name" json:"name"`
	Params map[string]string `yaml:"params" json:"params,omitempty"`
}

// CatalogFile is the features.yaml format.
type CatalogFile struct {
	Features []Feature `yaml:"features"`
}

// LoadCatalog reads and validates features.yaml.
func LoadCatalog(path string) ([]Feature, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseCatalog(b)
}

// ParseCatalog parses and validates a catalog.
func ParseCatalog(b []byte) ([]Feature, error) {
	var f CatalogFile
	if err := svc.DecodeYAML(b, &f); err != nil {
		return nil, fmt.Errorf("%w: features: %w", svc.ErrInvalid, err)
	}
	seen := map[string]bool{}
	for i, ft := range f.Features {
		switch {
		case !svc.ValidID(ft.ID) || seen[ft.ID]:
			return nil, fmt.Errorf("%w: feature %d: id %q missing, invalid or duplicate", svc.ErrInvalid, i, ft.ID)
		case ft.Season != Winter && ft.Season != Summer && ft.Season != AllYear:
			return nil, fmt.Errorf("%w: feature %s: season %q: want winter, summer or all-year", svc.ErrInvalid, ft.ID, ft.Season)
		case ft.Rollout != nil && (*ft.Rollout < 0 || *ft.Rollout > 100):
			return nil, fmt.Errorf("%w: feature %s: rollout %d: want 0..100", svc.ErrInvalid, ft.ID, *ft.Rollout)
		case ft.Command.Name == "":
			ft.Command.Name = "feature"
			f.Features[i] = ft
		case !svc.ValidID(ft.Command.Name):
			return nil, fmt.Errorf("%w: feature %s: command name %q", svc.ErrInvalid, ft.ID, ft.Command.Name)
		}
		for k := range ft.Command.Params {
			if k == "feature" || k == "state" || k == "" {
				return nil, fmt.Errorf("%w: feature %s: param %q is reserved or empty", svc.ErrInvalid, ft.ID, k)
			}
		}
		seen[ft.ID] = true
	}
	return f.Features, nil
}

// InSeason reports whether season is active on date in hemisphere ("north"
// or "south"). Northern winter is November to March, summer June to
// August; the southern hemisphere is shifted by six months (winter May to
// September, summer December to February). Dates are calendar dates (UTC).
func InSeason(season, hemisphere string, date time.Time) bool {
	m := int(date.UTC().Month())
	if hemisphere == "south" {
		m = (m+5)%12 + 1 // shift by six months
	}
	switch season {
	case AllYear:
		return true
	case Winter:
		return m >= 11 || m <= 3
	case Summer:
		return m >= 6 && m <= 8
	}
	return false
}
