package ocpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/availability"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/remotecontrol"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"

	"github.com/telegate/telegate/gateway/ocpp/wsmux"
)

// Command is an operator's request to a charge point.
type Command struct {
	// Action: remote_start, remote_stop, change_availability, reset.
	Action        string `json:"action"`
	IDTag         string `json:"id_tag,omitempty"`         // remote_start
	TransactionID string `json:"transaction_id,omitempty"` // remote_stop
	Connector     int    `json:"connector,omitempty"`      // remote_start, change_availability
	Operative     bool   `json:"operative,omitempty"`      // change_availability
	Hard          bool   `json:"hard,omitempty"`           // reset
}

// CommandResult is what the charge point answered (on NATS
// charging.cmdresult.{station} after UseNATS; each replica lists the last
// MaxCommandResults).
type CommandResult struct {
	Station string    `json:"station"`
	Action  string    `json:"action"`
	Version string    `json:"version"`
	Status  string    `json:"status"` // the charge point's status value, or "error"
	Error   string    `json:"error,omitempty"`
	At      time.Time `json:"at"`
}

// MaxCommandResults bounds the command log each replica lists.
const MaxCommandResults = 1000

// CommandTimeout bounds the wait for a charge point's answer.
const CommandTimeout = 30 * time.Second

type answer struct {
	status string
	err    error
}

// Send sends cmd to station and waits for its answer: directly when this
// replica holds the station's socket, else (with NATS, UseNATS) through
// the replica that does; ErrOffline when none does.
func (c *Central) Send(ctx context.Context, station string, cmd Command) (CommandResult, error) {
	if !c.Mux.Registered(station) {
		return CommandResult{}, fmt.Errorf("%w: %s", ErrUnknown, station)
	}
	if _, ok := c.Mux.Connected(station); !ok && c.bus != nil {
		return c.sendRouted(ctx, station, cmd)
	}
	return c.sendLocal(ctx, station, cmd)
}

// sendLocal sends cmd over this replica's socket to station.
func (c *Central) sendLocal(ctx context.Context, station string, cmd Command) (CommandResult, error) {
	proto, ok := c.Mux.Connected(station)
	if !ok {
		return CommandResult{}, fmt.Errorf("%w: %s", ErrOffline, station)
	}
	ch := make(chan answer, 1)
	done := func(status string, err error) { ch <- answer{status, err} }
	var err error
	if proto == wsmux.V16 {
		err = c.send16(station, cmd, done)
	} else {
		err = c.send201(station, cmd, done)
	}
	if err != nil {
		c.m.Commands.WithLabelValues(cmd.Action, "invalid").Inc()
		return CommandResult{}, err
	}
	res := CommandResult{Station: station, Action: cmd.Action, Version: proto, At: c.now()}
	ctx, cancel := context.WithTimeout(ctx, CommandTimeout)
	defer cancel()
	select {
	case a := <-ch:
		res.Status = a.status
		if a.err != nil {
			res.Status, res.Error = "error", a.err.Error()
		}
	case <-ctx.Done():
		res.Status, res.Error = "error", "no answer from the charge point"
	}
	c.m.Commands.WithLabelValues(cmd.Action, res.Status).Inc()
	c.recordResult(res)
	c.log.Info("OCPP command", "station", station, "action", cmd.Action, "status", res.Status)
	return res, nil
}

// Results returns the recorded command results, oldest first.
func (c *Central) Results() []CommandResult {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	return append([]CommandResult(nil), c.cmds...)
}

func (c *Central) send16(station string, cmd Command, done func(string, error)) error {
	switch cmd.Action {
	case "remote_start":
		if cmd.IDTag == "" {
			return fmt.Errorf("%w: id_tag required", ErrBadCommand)
		}
		return c.cs16.RemoteStartTransaction(station, func(r *core.RemoteStartTransactionConfirmation, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, cmd.IDTag, func(r *core.RemoteStartTransactionRequest) {
			if cmd.Connector > 0 {
				r.ConnectorId = &cmd.Connector
			}
		})
	case "remote_stop":
		tx, err := strconv.Atoi(cmd.TransactionID)
		if err != nil {
			return fmt.Errorf("%w: transaction_id must be the 1.6 integer id", ErrBadCommand)
		}
		return c.cs16.RemoteStopTransaction(station, func(r *core.RemoteStopTransactionConfirmation, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, tx)
	case "change_availability":
		t := core.AvailabilityTypeInoperative
		if cmd.Operative {
			t = core.AvailabilityTypeOperative
		}
		return c.cs16.ChangeAvailability(station, func(r *core.ChangeAvailabilityConfirmation, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, cmd.Connector, t)
	case "reset":
		t := core.ResetTypeSoft
		if cmd.Hard {
			t = core.ResetTypeHard
		}
		return c.cs16.Reset(station, func(r *core.ResetConfirmation, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, t)
	}
	return fmt.Errorf("%w: unknown action %q", ErrBadCommand, cmd.Action)
}

func (c *Central) send201(station string, cmd Command, done func(string, error)) error {
	switch cmd.Action {
	case "remote_start":
		if cmd.IDTag == "" {
			return fmt.Errorf("%w: id_tag required", ErrBadCommand)
		}
		remoteID := int(c.now().UnixMilli() & 0x7fffffff)
		return c.cs201.RequestStartTransaction(station, func(r *remotecontrol.RequestStartTransactionResponse, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, remoteID, types201.IdToken{IdToken: cmd.IDTag, Type: types201.IdTokenTypeISO14443},
			func(r *remotecontrol.RequestStartTransactionRequest) {
				if cmd.Connector > 0 {
					r.EvseID = &cmd.Connector
				}
			})
	case "remote_stop":
		if cmd.TransactionID == "" {
			return fmt.Errorf("%w: transaction_id required", ErrBadCommand)
		}
		return c.cs201.RequestStopTransaction(station, func(r *remotecontrol.RequestStopTransactionResponse, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, cmd.TransactionID)
	case "change_availability":
		s := availability.OperationalStatusInoperative
		if cmd.Operative {
			s = availability.OperationalStatusOperative
		}
		return c.cs201.ChangeAvailability(station, func(r *availability.ChangeAvailabilityResponse, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, s)
	case "reset":
		t := provisioning.ResetTypeOnIdle
		if cmd.Hard {
			t = provisioning.ResetTypeImmediate
		}
		return c.cs201.Reset(station, func(r *provisioning.ResetResponse, err error) {
			done(st(r, err, func() string { return string(r.Status) }))
		}, t)
	}
	return fmt.Errorf("%w: unknown action %q", ErrBadCommand, cmd.Action)
}

func st[T any](r *T, err error, status func() string) (string, error) {
	if err != nil {
		return "", err
	}
	if r == nil {
		return "", errors.New("empty answer")
	}
	return status(), nil
}

// MaxCommandBody bounds a command request body.
const MaxCommandBody = 4096

// CommandHandler serves POST /api/ocpp/stations/{station}/commands (wrap it
// with the operator role) and GET /api/ocpp/commands (viewer).
func (c *Central) CommandHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/ocpp/stations/{station}/commands", func(w http.ResponseWriter, r *http.Request) {
		var cmd Command
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxCommandBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cmd); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid JSON command"})
			return
		}
		res, err := c.Send(r.Context(), r.PathValue("station"), cmd)
		switch {
		case errors.Is(err, ErrUnknown):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such charge point"})
		case errors.Is(err, ErrOffline):
			writeJSON(w, http.StatusConflict, map[string]string{"error": "charge point not connected"})
		case errors.Is(err, ErrBadCommand):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "command not sent"})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	mux.HandleFunc("GET /api/ocpp/commands", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Results())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
