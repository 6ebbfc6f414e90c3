import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import type uPlot from "uplot";
import { client, followWatch, session } from "../api";
import { useSignal, withAbort } from "../state";
import { ErrorText, Field, formatTime, useAction } from "../ui";
import {
  AlertState,
  Comparison,
  HostStatus,
  MonitoringService,
  Severity,
  type Alert,
  type AlertRule,
  type Host,
  type Series,
  type Silence,
} from "../../../gen/agora/monitoring/v1/monitoring_pb.js";

const monitoring = client(MonitoringService);
const RANGES: [string, number][] = [
  ["15 minutes", 15 * 60_000],
  ["1 hour", 3_600_000],
  ["6 hours", 6 * 3_600_000],
  ["24 hours", 24 * 3_600_000],
];
const COMPARISONS: [Comparison, string][] = [
  [Comparison.GREATER_THAN, ">"],
  [Comparison.GREATER_OR_EQUAL, "≥"],
  [Comparison.LESS_THAN, "<"],
  [Comparison.LESS_OR_EQUAL, "≤"],
];
const lower = (name: string | undefined) => (name ?? "").toLowerCase();

export function Monitoring() {
  const me = useSignal(session)!.user;
  const [hosts, setHosts] = useState<Host[]>([]);
  const [host, setHost] = useState("");
  const [alerts, setAlerts] = useState<Alert[]>([]);
  const [reloads, setReloads] = useState(0);
  const action = useAction();

  useEffect(() => {
    void action.run(async () => {
      const [h, a] = await Promise.all([monitoring.listHosts({ pageSize: 200 }), monitoring.listAlerts({ pageSize: 50 })]);
      setHosts(h.hosts);
      if (!host && h.hosts[0]) setHost(h.hosts[0].name);
      setAlerts(a.alerts);
    });
  }, [reloads]);

  // Alerts arrive live with their state changes; host status is refreshed with them and every 15 s.
  useEffect(
    () =>
      withAbort((signal) => {
        const reload = () => setReloads((n) => n + 1);
        const timer = setInterval(reload, 15_000);
        signal.addEventListener("abort", () => clearInterval(timer));
        followWatch(signal, (afterCursor, s) => monitoring.watchAlerts({ afterCursor, includeSilenced: true }, { signal: s }), {
          event: ({ alert }) => setAlerts((all) => [alert!, ...all.filter((a) => a.id !== alert!.id)]),
          resync: reload,
        });
      }),
    [],
  );

  return (
    <section aria-labelledby="monitoring-title">
      <div class="page-head">
        <h1 id="monitoring-title">Monitoring</h1>
      </div>
      <ErrorText error={action.error} />
      <div class="two">
        <aside>
          <h2>Hosts</h2>
          <ul class="plain" aria-label="Hosts">
            {hosts.map((h) => (
              <li key={h.name}>
                <button type="button" class="link" aria-pressed={h.name === host} onClick={() => setHost(h.name)}>
                  {h.name}
                </button>
                <span class={`badge ${h.status === HostStatus.UP ? "ok" : "bad"}`}>{h.status === HostStatus.UP ? "▲ Up" : "▼ Down"}</span>
              </li>
            ))}
            {hosts.length === 0 && <li>No host has reported yet.</li>}
          </ul>
        </aside>
        <div>{host ? <Chart host={host} /> : <p>Choose a host.</p>}</div>
      </div>
      <h2>Alerts</h2>
      <table class="grid" aria-label="Alerts">
        <thead>
          <tr>
            <th scope="col">Alert</th>
            <th scope="col">Host</th>
            <th scope="col">State</th>
            <th scope="col">Severity</th>
            <th scope="col">Value</th>
            <th scope="col">Since</th>
          </tr>
        </thead>
        <tbody>
          {alerts.map((a) => (
            <tr key={a.id}>
              <td>{a.summary || a.name}</td>
              <td>{a.host}</td>
              <td>
                <span class={`badge ${a.state === AlertState.FIRING ? "bad" : a.state === AlertState.PENDING ? "warn" : "ok"}`}>{AlertState[a.state]}</span>
                {a.silenced && <span class="tag">silenced</span>}
              </td>
              <td>{lower(Severity[a.severity])}</td>
              <td class="num">{a.value.toFixed(1)}</td>
              <td>{a.startTime ? formatTime(timestampMs(a.startTime)) : ""}</td>
            </tr>
          ))}
          {alerts.length === 0 && (
            <tr>
              <td colSpan={6}>No alerts.</td>
            </tr>
          )}
        </tbody>
      </table>
      {me.admin && <Rules />}
      {me.admin && <Silences hosts={hosts} />}
    </section>
  );
}

function Chart(props: { host: string }) {
  const [metric, setMetric] = useState("cpu.usage_percent");
  const [range, setRange] = useState(RANGES[1]![1]);
  const [live, setLive] = useState(true);
  const [series, setSeries] = useState<Series[]>([]);
  const [tick, setTick] = useState(0);
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const { error, run } = useAction();

  useEffect(() => {
    const end = Date.now();
    const step = Math.max(1, Math.round(range / 60 / 1000));
    void run(async () => {
      const res = await monitoring.queryMetrics({
        host: props.host,
        metric,
        startTime: timestampFromMs(end - range),
        endTime: timestampFromMs(end),
        step: create(DurationSchema, { seconds: BigInt(step) }),
      });
      setSeries(res.series);
    });
  }, [props.host, metric, range, tick]);

  useEffect(() => {
    if (!live) return;
    const timer = setInterval(() => setTick((t) => t + 1), 10_000);
    return () => clearInterval(timer);
  }, [live]);

  // uPlot is loaded with this page only: the rest of the console does not pay for it.
  useEffect(() => {
    let cancelled = false;
    const s = series[0];
    void (async () => {
      const { default: UPlot } = await import("uplot");
      await import("uplot/dist/uPlot.min.css");
      if (cancelled || !box.current) return;
      plot.current?.destroy();
      plot.current = null;
      if (!s) return;
      const x = s.points.map((p) => timestampMs(p.time!) / 1000);
      const pick = (k: "min" | "avg" | "max") => s.points.map((p) => p[k] ?? null);
      plot.current = new UPlot(
        {
          width: Math.max(320, box.current.clientWidth),
          height: 240,
          series: [
            {},
            { label: "max", stroke: "#b42318", dash: [6, 4], width: 1.5 },
            { label: "avg", stroke: "#1d4ed8", width: 2 },
            { label: "min", stroke: "#1a7f37", dash: [2, 3], width: 1.5 },
          ],
          axes: [{}, { label: metric }],
        },
        [x, pick("max"), pick("avg"), pick("min")],
        box.current,
      );
    })();
    return () => {
      cancelled = true;
    };
  }, [series]);
  useEffect(() => () => plot.current?.destroy(), []);

  const last = series[0]?.points.filter((p) => p.count > 0n).at(-1);
  return (
    <div>
      <div class="toolbar">
        <Field label="Metric">
          <input value={metric} onChange={(e) => setMetric(e.currentTarget.value)} />
        </Field>
        <Field label="Range">
          <select value={range} onChange={(e) => setRange(Number(e.currentTarget.value))}>
            {RANGES.map(([name, ms]) => (
              <option value={ms}>{name}</option>
            ))}
          </select>
        </Field>
        <label class="check">
          <input type="checkbox" checked={live} onChange={(e) => setLive(e.currentTarget.checked)} /> Live refresh
        </label>
      </div>
      <ErrorText error={error} />
      <figure class="chart">
        <div ref={box} role="img" aria-label={`${metric} on ${props.host}: minimum, average and maximum per step`} />
        <figcaption>
          {last ? (
            <>
              Latest step on {props.host}: min {last.min?.toFixed(1)}, avg {last.avg?.toFixed(1)}, max {last.max?.toFixed(1)} ({String(last.count)} samples). Lines: max dashed,
              avg solid, min dotted.
            </>
          ) : (
            `No ${metric} data for ${props.host} in this range.`
          )}
        </figcaption>
      </figure>
    </div>
  );
}

function Rules() {
  const [rules, setRules] = useState<AlertRule[]>([]);
  const [form, setForm] = useState({ name: "", metric: "cpu.usage_percent", comparison: Comparison.GREATER_THAN, threshold: 90, forSeconds: 0, severity: Severity.WARNING });
  const { busy, error, run } = useAction();
  const load = async () => setRules((await monitoring.listAlertRules({ pageSize: 200 })).rules);
  useEffect(() => void run(load), []);
  const set = (key: keyof typeof form) => (e: Event) => {
    const el = e.currentTarget as HTMLInputElement;
    setForm({ ...form, [key]: key === "name" || key === "metric" ? el.value : Number(el.value) });
  };
  return (
    <div class="admin-block">
      <h2>Alert rules</h2>
      <ul class="plain" aria-label="Alert rules">
        {rules.map((r) => (
          <li key={r.id}>
            <span>
              <strong>{r.name}</strong>: {r.metric} {COMPARISONS.find(([c]) => c === r.comparison)?.[1]} {r.threshold} ({lower(Severity[r.severity])})
            </span>
            <button type="button" class="danger" aria-label={`Delete rule ${r.name}`} onClick={() => void run(async () => (await monitoring.deleteAlertRule({ id: r.id, etag: r.etag }), await load()))}>
              Delete
            </button>
          </li>
        ))}
      </ul>
      <form
        class="toolbar"
        aria-label="New alert rule"
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            await monitoring.createAlertRule({
              rule: {
                name: form.name,
                metric: form.metric,
                comparison: form.comparison,
                threshold: form.threshold,
                severity: form.severity,
                forDuration: create(DurationSchema, { seconds: BigInt(form.forSeconds) }),
              },
              requestId: crypto.randomUUID(),
            });
            await load();
          });
        }}
      >
        <Field label="Rule name">
          <input required value={form.name} onInput={set("name")} />
        </Field>
        <Field label="Rule metric">
          <input required value={form.metric} onInput={set("metric")} />
        </Field>
        <Field label="Comparison">
          <select value={form.comparison} onChange={set("comparison")}>
            {COMPARISONS.map(([c, sign]) => (
              <option value={c}>{sign}</option>
            ))}
          </select>
        </Field>
        <Field label="Threshold">
          <input type="number" step="any" value={form.threshold} onInput={set("threshold")} />
        </Field>
        <Field label="For (seconds)">
          <input type="number" min={0} value={form.forSeconds} onInput={set("forSeconds")} />
        </Field>
        <Field label="Severity">
          <select value={form.severity} onChange={set("severity")}>
            <option value={Severity.INFO}>info</option>
            <option value={Severity.WARNING}>warning</option>
            <option value={Severity.CRITICAL}>critical</option>
          </select>
        </Field>
        <button type="submit" class="primary" disabled={busy}>
          Add rule
        </button>
      </form>
      <ErrorText error={error} />
    </div>
  );
}

function Silences(props: { hosts: Host[] }) {
  const [silences, setSilences] = useState<Silence[]>([]);
  const [host, setHost] = useState("");
  const [hours, setHours] = useState(2);
  const [comment, setComment] = useState("");
  const { busy, error, run } = useAction();
  const load = async () => setSilences((await monitoring.listSilences({ pageSize: 200 })).silences);
  useEffect(() => void run(load), []);
  return (
    <div class="admin-block">
      <h2>Silences</h2>
      <ul class="plain" aria-label="Silences">
        {silences.map((s) => (
          <li key={s.id}>
            <span>
              {s.host ? `Host ${s.host}` : "All hosts"} until {s.expireTime ? formatTime(timestampMs(s.expireTime)) : "?"}
              {s.comment && ` — ${s.comment}`}
            </span>
            <button type="button" aria-label={`End silence for ${s.host || "all hosts"}`} onClick={() => void run(async () => (await monitoring.deleteSilence({ id: s.id }), await load()))}>
              End
            </button>
          </li>
        ))}
        {silences.length === 0 && <li>No silences.</li>}
      </ul>
      <form
        class="toolbar"
        aria-label="New silence"
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            await monitoring.createSilence({ silence: { host, comment, expireTime: timestampFromMs(Date.now() + hours * 3_600_000) } });
            await load();
          });
        }}
      >
        <Field label="Silence host">
          <select value={host} onChange={(e) => setHost(e.currentTarget.value)} required>
            <option value="">Choose a host</option>
            {props.hosts.map((h) => (
              <option value={h.name}>{h.name}</option>
            ))}
          </select>
        </Field>
        <Field label="For (hours)">
          <input type="number" min={1} max={8760} value={hours} onInput={(e) => setHours(Number(e.currentTarget.value))} />
        </Field>
        <Field label="Comment">
          <input value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
        </Field>
        <button type="submit" disabled={busy}>
          Silence
        </button>
      </form>
      <ErrorText error={error} />
    </div>
  );
}
