package ocpp

import (
	"fmt"
	"time"

	"github.com/lorenzodonini/ocpp-go/ocpp"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/availability"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/remotecontrol"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"
	"github.com/lorenzodonini/ocpp-go/ocppj"
	"github.com/lorenzodonini/ocpp-go/ws"
)

// evse201 is the simulated station's single EVSE (connector 1).
const evse201 = 1

type driver201 struct {
	s  *Station
	cs ocpp201.ChargingStation
}

func newDriver201(s *Station, client *ws.Client) *driver201 {
	d := &driver201{s: s, cs: ocpp201.NewChargingStation(s.cfg.ID, nil, client)}
	h := handler201{s}
	d.cs.SetAvailabilityHandler(h)
	d.cs.SetRemoteControlHandler(h)
	d.cs.SetProvisioningHandler(h)
	return d
}

func (d *driver201) start(url string) error { return d.cs.Start(url) }
func (d *driver201) stop()                  { d.cs.Stop() }

func (d *driver201) boot() (time.Duration, error) {
	r, err := d.cs.BootNotification(provisioning.BootReasonPowerUp, "telegate-sim-dc", "telegate", func(r *provisioning.BootNotificationRequest) {
		r.ChargingStation.FirmwareVersion = "sim-2.0.1"
		r.ChargingStation.SerialNumber = d.s.cfg.ID
	})
	if err != nil {
		return 0, err
	}
	if r.Status != provisioning.RegistrationStatusAccepted {
		return 0, fmt.Errorf("%w: boot %s", ErrConfig, r.Status)
	}
	return time.Duration(r.Interval) * time.Second, nil
}

func (d *driver201) heartbeat() error { _, err := d.cs.Heartbeat(); return err }

func (d *driver201) status(st connStatus, at time.Time) error {
	s := availability.ConnectorStatusOccupied
	switch st {
	case stAvailable:
		s = availability.ConnectorStatusAvailable
	case stUnavailable:
		s = availability.ConnectorStatusUnavailable
	case stFinishing:
		return nil // 2.0.1 has no Finishing: the connector stays Occupied until unplugged
	}
	_, err := d.cs.StatusNotification(types.NewDateTime(at), s, evse201, 1)
	return err
}

// plugged: 2.0.1 reports SoC in the Started event itself.
func (d *driver201) plugged(*session, time.Time) error { return nil }

func meter201(ss *session, register float64, at time.Time, ctx types.ReadingContext) []types.MeterValue {
	return []types.MeterValue{{Timestamp: *types.NewDateTime(at), SampledValue: []types.SampledValue{
		{Value: register, Measurand: types.MeasurandEnergyActiveImportRegister, Context: ctx, UnitOfMeasure: &types.UnitOfMeasure{Unit: "Wh"}},
		{Value: ss.powerW, Measurand: types.MeasurandPowerActiveImport, Context: ctx, UnitOfMeasure: &types.UnitOfMeasure{Unit: "W"}},
		{Value: ss.socPct, Measurand: types.MeasurandSoC, Context: ctx, UnitOfMeasure: &types.UnitOfMeasure{Unit: "Percent"}}}}}
}

func (d *driver201) event(ss *session, typ transactions.TransactionEvent, reason transactions.TriggerReason, at time.Time,
	state transactions.ChargingState, stopped transactions.Reason, mv []types.MeterValue) error {
	d.s.mu.Lock()
	seq := ss.seq
	ss.seq++
	d.s.mu.Unlock()
	_, err := d.cs.TransactionEvent(typ, types.NewDateTime(at), reason, seq,
		transactions.Transaction{TransactionID: ss.tx, ChargingState: state, StoppedReason: stopped},
		func(r *transactions.TransactionEventRequest) {
			r.Evse = &types.EVSE{ID: evse201, ConnectorID: func(i int) *int { return &i }(1)}
			r.MeterValue = mv
			if typ == transactions.TransactionEventStarted {
				r.IDToken = &types.IdToken{IdToken: trimTag(ss.idTag, 36), Type: types.IdTokenTypeISO14443}
			}
		})
	return err
}

func (d *driver201) startTx(ss *session, register float64, at time.Time) error {
	tag := trimTag(ss.idTag, 36)
	if _, err := d.cs.Authorize(tag, types.IdTokenTypeISO14443); err != nil {
		return err
	}
	d.s.mu.Lock()
	ss.tx = fmt.Sprintf("%s-%d", d.s.cfg.ID, at.UnixMilli())
	d.s.mu.Unlock()
	return d.event(ss, transactions.TransactionEventStarted, transactions.TriggerReasonAuthorized, at,
		transactions.ChargingStateCharging, "", meter201(ss, register, at, types.ReadingContextTransactionBegin))
}

func (d *driver201) meter(ss *session, register float64, at time.Time) error {
	return d.event(ss, transactions.TransactionEventUpdated, transactions.TriggerReasonMeterValuePeriodic, at,
		transactions.ChargingStateCharging, "", meter201(ss, register, at, types.ReadingContextSamplePeriodic))
}

func (d *driver201) stopTx(ss *session, register float64, at time.Time, reason string) error {
	trigger := transactions.TriggerReasonEVCommunicationLost
	r := transactions.Reason(reason)
	switch reason {
	case "Remote":
		trigger = transactions.TriggerReasonRemoteStop
	case "Local":
		trigger = transactions.TriggerReasonStopAuthorized
	case "SoftReset", "HardReset":
		trigger, r = transactions.TriggerReasonResetCommand, transactions.ReasonImmediateReset
	}
	return d.event(ss, transactions.TransactionEventEnded, trigger, at, transactions.ChargingStateIdle, r,
		meter201(ss, register, at, types.ReadingContextTransactionEnd))
}

// handler201 answers the CSMS (on ocpp-go's goroutine: it only hands work
// to Station.Run).
type handler201 struct{ s *Station }

func notSupported(what string) error {
	return ocpp.NewHandlerError(ocppj.NotSupported, what+" not supported by the simulator")
}

func (h handler201) OnChangeAvailability(r *availability.ChangeAvailabilityRequest) (*availability.ChangeAvailabilityResponse, error) {
	kind := "available"
	if r.OperationalStatus == availability.OperationalStatusInoperative {
		kind = "unavailable"
	}
	if !h.s.offer(command{kind: kind}) {
		return availability.NewChangeAvailabilityResponse(availability.ChangeAvailabilityStatusRejected), nil
	}
	if h.s.running() != "" {
		return availability.NewChangeAvailabilityResponse(availability.ChangeAvailabilityStatusScheduled), nil
	}
	return availability.NewChangeAvailabilityResponse(availability.ChangeAvailabilityStatusAccepted), nil
}

func (h handler201) OnRequestStartTransaction(r *remotecontrol.RequestStartTransactionRequest) (*remotecontrol.RequestStartTransactionResponse, error) {
	if (r.EvseID != nil && *r.EvseID != evse201) || !h.s.canStart() || !h.s.offer(command{kind: "start", idTag: r.IDToken.IdToken}) {
		return remotecontrol.NewRequestStartTransactionResponse(remotecontrol.RequestStartStopStatusRejected), nil
	}
	return remotecontrol.NewRequestStartTransactionResponse(remotecontrol.RequestStartStopStatusAccepted), nil
}

func (h handler201) OnRequestStopTransaction(r *remotecontrol.RequestStopTransactionRequest) (*remotecontrol.RequestStopTransactionResponse, error) {
	if h.s.running() != r.TransactionID || !h.s.offer(command{kind: "stop"}) {
		return remotecontrol.NewRequestStopTransactionResponse(remotecontrol.RequestStartStopStatusRejected), nil
	}
	return remotecontrol.NewRequestStopTransactionResponse(remotecontrol.RequestStartStopStatusAccepted), nil
}

func (h handler201) OnTriggerMessage(*remotecontrol.TriggerMessageRequest) (*remotecontrol.TriggerMessageResponse, error) {
	return remotecontrol.NewTriggerMessageResponse(remotecontrol.TriggerMessageStatusNotImplemented), nil
}

func (h handler201) OnUnlockConnector(*remotecontrol.UnlockConnectorRequest) (*remotecontrol.UnlockConnectorResponse, error) {
	return remotecontrol.NewUnlockConnectorResponse(remotecontrol.UnlockStatusUnknownConnector), nil
}

func (h handler201) OnReset(r *provisioning.ResetRequest) (*provisioning.ResetResponse, error) {
	reason := "SoftReset"
	if r.Type == provisioning.ResetTypeImmediate {
		reason = "HardReset"
	}
	if !h.s.offer(command{kind: "reset", idTag: reason}) {
		return provisioning.NewResetResponse(provisioning.ResetStatusRejected), nil
	}
	return provisioning.NewResetResponse(provisioning.ResetStatusAccepted), nil
}

func (h handler201) OnGetBaseReport(*provisioning.GetBaseReportRequest) (*provisioning.GetBaseReportResponse, error) {
	return nil, notSupported("GetBaseReport")
}

func (h handler201) OnGetReport(*provisioning.GetReportRequest) (*provisioning.GetReportResponse, error) {
	return nil, notSupported("GetReport")
}

func (h handler201) OnGetVariables(*provisioning.GetVariablesRequest) (*provisioning.GetVariablesResponse, error) {
	return nil, notSupported("GetVariables")
}

func (h handler201) OnSetNetworkProfile(*provisioning.SetNetworkProfileRequest) (*provisioning.SetNetworkProfileResponse, error) {
	return nil, notSupported("SetNetworkProfile")
}

func (h handler201) OnSetVariables(*provisioning.SetVariablesRequest) (*provisioning.SetVariablesResponse, error) {
	return nil, notSupported("SetVariables")
}
