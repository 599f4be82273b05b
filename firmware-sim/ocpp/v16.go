package ocpp

import (
	"strconv"
	"time"

	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	"github.com/lorenzodonini/ocpp-go/ws"
)

// connector16 is the simulated station's single connector.
const connector16 = 1

type driver16 struct {
	s  *Station
	cp ocpp16.ChargePoint
}

func newDriver16(s *Station, client *ws.Client) *driver16 {
	d := &driver16{s: s, cp: ocpp16.NewChargePoint(s.cfg.ID, nil, client)}
	d.cp.SetCoreHandler(handler16{s})
	return d
}

func (d *driver16) start(url string) error { return d.cp.Start(url) }
func (d *driver16) stop()                  { d.cp.Stop() }

func (d *driver16) boot() (time.Duration, error) {
	r, err := d.cp.BootNotification("telegate-sim-ac", "telegate", func(r *core.BootNotificationRequest) {
		r.FirmwareVersion = "sim-1.6"
		r.ChargePointSerialNumber = d.s.cfg.ID
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(r.Interval) * time.Second, nil
}

func (d *driver16) heartbeat() error { _, err := d.cp.Heartbeat(); return err }

func (d *driver16) status(st connStatus, at time.Time) error {
	s := map[connStatus]core.ChargePointStatus{stAvailable: core.ChargePointStatusAvailable,
		stPreparing: core.ChargePointStatusPreparing, stCharging: core.ChargePointStatusCharging,
		stFinishing: core.ChargePointStatusFinishing, stUnavailable: core.ChargePointStatusUnavailable}[st]
	_, err := d.cp.StatusNotification(connector16, core.NoError, s, func(r *core.StatusNotificationRequest) {
		r.Timestamp = types.NewDateTime(at)
	})
	return err
}

func sample16(v float64, m types.Measurand, u types.UnitOfMeasure) types.SampledValue {
	return types.SampledValue{Value: strconv.FormatFloat(v, 'f', 1, 64), Measurand: m, Unit: u,
		Context: types.ReadingContextSamplePeriodic}
}

// plugged sends the car's SoC and offered power before the transaction
// (a connector meter value without transaction id, as DC chargers do once
// the car has talked to them).
func (d *driver16) plugged(ss *session, at time.Time) error {
	_, err := d.cp.MeterValues(connector16, []types.MeterValue{{Timestamp: types.NewDateTime(at), SampledValue: []types.SampledValue{
		sample16(ss.socPct, types.MeasurandSoC, types.UnitOfMeasurePercent),
		sample16(ss.powerW, types.MeasurandPowerActiveImport, types.UnitOfMeasureW)}}})
	return err
}

func (d *driver16) startTx(ss *session, register float64, at time.Time) error {
	tag := trimTag(ss.idTag, 20)
	if _, err := d.cp.Authorize(tag); err != nil {
		return err
	}
	r, err := d.cp.StartTransaction(connector16, tag, int(register), types.NewDateTime(at))
	if err != nil {
		return err
	}
	d.s.mu.Lock()
	ss.tx = strconv.Itoa(r.TransactionId)
	d.s.mu.Unlock()
	return nil
}

func (d *driver16) meter(ss *session, register float64, at time.Time) error {
	tx, err := strconv.Atoi(ss.tx)
	if err != nil {
		return err
	}
	_, err = d.cp.MeterValues(connector16, []types.MeterValue{{Timestamp: types.NewDateTime(at), SampledValue: []types.SampledValue{
		sample16(register, types.MeasurandEnergyActiveImportRegister, types.UnitOfMeasureWh),
		sample16(ss.powerW, types.MeasurandPowerActiveImport, types.UnitOfMeasureW),
		sample16(ss.socPct, types.MeasurandSoC, types.UnitOfMeasurePercent)}}},
		func(r *core.MeterValuesRequest) { r.TransactionId = &tx })
	return err
}

func (d *driver16) stopTx(ss *session, register float64, at time.Time, reason string) error {
	tx, err := strconv.Atoi(ss.tx)
	if err != nil {
		return err
	}
	_, err = d.cp.StopTransaction(int(register), types.NewDateTime(at), tx, func(r *core.StopTransactionRequest) {
		r.Reason = core.Reason(reason)
		r.IdTag = trimTag(ss.idTag, 20)
		r.TransactionData = []types.MeterValue{{Timestamp: types.NewDateTime(at), SampledValue: []types.SampledValue{
			sample16(ss.socPct, types.MeasurandSoC, types.UnitOfMeasurePercent)}}}
	})
	return err
}

// handler16 answers the central system (on ocpp-go's goroutine: it only
// hands work to Station.Run).
type handler16 struct{ s *Station }

func (h handler16) OnChangeAvailability(r *core.ChangeAvailabilityRequest) (*core.ChangeAvailabilityConfirmation, error) {
	kind := "available"
	if r.Type == core.AvailabilityTypeInoperative {
		kind = "unavailable"
	}
	if !h.s.offer(command{kind: kind}) {
		return core.NewChangeAvailabilityConfirmation(core.AvailabilityStatusRejected), nil
	}
	if h.s.running() != "" {
		return core.NewChangeAvailabilityConfirmation(core.AvailabilityStatusScheduled), nil
	}
	return core.NewChangeAvailabilityConfirmation(core.AvailabilityStatusAccepted), nil
}

func (h handler16) OnChangeConfiguration(*core.ChangeConfigurationRequest) (*core.ChangeConfigurationConfirmation, error) {
	return core.NewChangeConfigurationConfirmation(core.ConfigurationStatusNotSupported), nil
}

func (h handler16) OnClearCache(*core.ClearCacheRequest) (*core.ClearCacheConfirmation, error) {
	return core.NewClearCacheConfirmation(core.ClearCacheStatusAccepted), nil
}

func (h handler16) OnDataTransfer(*core.DataTransferRequest) (*core.DataTransferConfirmation, error) {
	return core.NewDataTransferConfirmation(core.DataTransferStatusUnknownVendorId), nil
}

func (h handler16) OnGetConfiguration(*core.GetConfigurationRequest) (*core.GetConfigurationConfirmation, error) {
	return core.NewGetConfigurationConfirmation(nil), nil
}

func (h handler16) OnRemoteStartTransaction(r *core.RemoteStartTransactionRequest) (*core.RemoteStartTransactionConfirmation, error) {
	if (r.ConnectorId != nil && *r.ConnectorId != connector16) || !h.s.canStart() || !h.s.offer(command{kind: "start", idTag: r.IdTag}) {
		return core.NewRemoteStartTransactionConfirmation(types.RemoteStartStopStatusRejected), nil
	}
	return core.NewRemoteStartTransactionConfirmation(types.RemoteStartStopStatusAccepted), nil
}

func (h handler16) OnRemoteStopTransaction(r *core.RemoteStopTransactionRequest) (*core.RemoteStopTransactionConfirmation, error) {
	if h.s.running() != strconv.Itoa(r.TransactionId) || !h.s.offer(command{kind: "stop"}) {
		return core.NewRemoteStopTransactionConfirmation(types.RemoteStartStopStatusRejected), nil
	}
	return core.NewRemoteStopTransactionConfirmation(types.RemoteStartStopStatusAccepted), nil
}

func (h handler16) OnReset(r *core.ResetRequest) (*core.ResetConfirmation, error) {
	reason := "SoftReset"
	if r.Type == core.ResetTypeHard {
		reason = "HardReset"
	}
	if !h.s.offer(command{kind: "reset", idTag: reason}) {
		return core.NewResetConfirmation(core.ResetStatusRejected), nil
	}
	return core.NewResetConfirmation(core.ResetStatusAccepted), nil
}

func (h handler16) OnUnlockConnector(*core.UnlockConnectorRequest) (*core.UnlockConnectorConfirmation, error) {
	return core.NewUnlockConnectorConfirmation(core.UnlockStatusNotSupported), nil
}
