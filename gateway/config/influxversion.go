package config

import (
	"errors"
	"fmt"
)

// ErrInfluxVersion: the influx section does not fit its version.
var ErrInfluxVersion = errors.New("config: influx version")

// Supported InfluxDB major versions (influx.version; docs/operations.md,
// "Supported InfluxDB versions"). 0 means 1.
const (
	InfluxV1 = 1 // 1.8 OSS / Enterprise: database + retention policy, user:password
	InfluxV2 = 2 // 2.x OSS / Cloud: bucket + org, API token, DBRP mapping for InfluxQL
	InfluxV3 = 3 // 3.x Core / Enterprise / Cloud: database, token
)

// InfluxEndpoints is what the writer (v2 write API) and the reader (v1
// query API, InfluxQL) use for one InfluxDB version.
type InfluxEndpoints struct {
	Version int
	// WriteBucket and WriteOrg: /api/v2/write?bucket=&org=.
	WriteBucket, WriteOrg string
	// QueryDatabase and QueryRetentionPolicy: /query?db=&rp=.
	QueryDatabase, QueryRetentionPolicy string
	// QueryAuthScheme: "Token" (default), "Bearer" or "Basic".
	QueryAuthScheme string
	// CreateDatabase: the gateway may create the database (1.x only).
	CreateDatabase bool
}

// Endpoints maps the influx section to the writer's and reader's settings
// for its version:
//
//   - 1: write bucket "database/retention_policy", no org; query db and rp;
//     token "user:password" (or username/password); create_database allowed.
//   - 2: write bucket influx.bucket (default: the database name) in
//     influx.org (required); InfluxQL reads db/rp through a DBRP mapping
//     to that bucket (`influx v1 dbrp create`); API token.
//   - 3: write bucket = the database (3.x's v2 write compatibility), no
//     org; query db = database, no retention policy; token.
func (i Influx) Endpoints() (InfluxEndpoints, error) {
	e := InfluxEndpoints{Version: i.Version, QueryDatabase: i.Database, QueryRetentionPolicy: i.RetentionPolicy,
		QueryAuthScheme: i.QueryAuthScheme}
	if e.Version == 0 {
		e.Version = InfluxV1
	}
	switch e.QueryAuthScheme {
	case "":
		e.QueryAuthScheme = "Token"
	case "Token", "Bearer", "Basic":
	default:
		return e, fmt.Errorf("%w: query_auth_scheme %q (Token, Bearer or Basic)", ErrInfluxVersion, i.QueryAuthScheme)
	}
	if i.Database == "" {
		return e, fmt.Errorf("%w: database is required", ErrInfluxVersion)
	}
	switch e.Version {
	case InfluxV1:
		if i.WriteBucket != "" {
			return e, fmt.Errorf("%w: bucket is for version 2; version 1 writes to database/retention_policy", ErrInfluxVersion)
		}
		e.WriteBucket = i.Bucket()
		e.CreateDatabase = i.CreateDatabase
	case InfluxV2:
		if i.Org == "" {
			return e, fmt.Errorf("%w: version 2 needs org", ErrInfluxVersion)
		}
		if i.CreateDatabase || i.Local.Enabled {
			return e, fmt.Errorf("%w: create_database and local are for version 1 (create the bucket and its DBRP mapping with the influx CLI)", ErrInfluxVersion)
		}
		e.WriteBucket, e.WriteOrg = i.WriteBucket, i.Org
		if e.WriteBucket == "" {
			e.WriteBucket = i.Database
		}
	case InfluxV3:
		if i.CreateDatabase || i.Local.Enabled || i.WriteBucket != "" || i.Username != "" {
			return e, fmt.Errorf("%w: version 3 takes database and token only (no create_database, local, bucket or username)", ErrInfluxVersion)
		}
		e.WriteBucket, e.QueryRetentionPolicy = i.Database, ""
	default:
		return e, fmt.Errorf("%w: %d (1, 2 or 3)", ErrInfluxVersion, i.Version)
	}
	return e, nil
}
