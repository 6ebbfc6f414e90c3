import { timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { useEffect, useState } from "preact/hooks";
import { client, keepStreaming, session } from "../api";
import { useSignal, withAbort } from "../state";
import { ErrorText, Field, formatTime, useAction } from "../ui";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { ReservationService, ReservationStatus, type Notification, type Reservation, type Resource } from "../../../gen/agora/reservation/v1/reservation_pb.js";

const reservations = client(ReservationService);
const DAY = 86_400_000;
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
/** The hours of the day the calendar shows (UTC, the slot grid's own time). */
const FIRST_HOUR = 8;
const LAST_HOUR = 20;
const ACTIVE = [ReservationStatus.PENDING, ReservationStatus.CONFIRMED];

/** Monday 00:00 UTC of the week `offset` weeks from this one. */
function weekStart(offset: number): number {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return today - ((now.getUTCDay() + 6) % 7) * DAY + offset * 7 * DAY;
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
const dayLabel = (ms: number) => `${DAYS[(new Date(ms).getUTCDay() + 6) % 7]} ${new Date(ms).toISOString().slice(5, 10)}`;
const statusName = (s: ReservationStatus) => ReservationStatus[s]!.toLowerCase();

export function Reservations() {
  const me = useSignal(session)!.user;
  const [resources, setResources] = useState<Resource[]>([]);
  const [resourceId, setResourceId] = useState("");
  const [week, setWeek] = useState(0);
  const [booked, setBooked] = useState<Reservation[]>([]);
  const [choice, setChoice] = useState<{ start: number } | { reservation: Reservation } | null>(null);
  const [notes, setNotes] = useState<Notification[]>([]);
  const [reloads, setReloads] = useState(0);
  const [showNewResource, setShowNewResource] = useState(false);
  const list = useAction();
  const resource = resources.find((r) => r.id === resourceId);
  const from = weekStart(week);

  const loadResources = async () => {
    const { resources } = await reservations.listResources({ active: true, pageSize: 200 });
    setResources(resources);
    if (!resourceId && resources[0]) setResourceId(resources[0].id);
  };
  useEffect(() => void list.run(loadResources), []);

  useEffect(() => {
    if (!resourceId) return;
    void list.run(async () => {
      const res = await reservations.listReservations({
        resourceId,
        statuses: ACTIVE,
        startTime: timestampFromMs(from),
        endTime: timestampFromMs(from + 7 * DAY),
        pageSize: 500,
      });
      setBooked(res.reservations);
    });
  }, [resourceId, from, reloads]);

  // Notifications: the latest, then live ones as they are stored.
  useEffect(
    () =>
      withAbort((signal) => {
        void (async () => {
          const { notifications } = await reservations.listNotifications({ pageSize: 20 }).catch(() => ({ notifications: [] as Notification[] }));
          setNotes(notifications);
          let cursor = notifications[0]?.cursor ?? "";
          await keepStreaming(signal, async (s) => {
            for await (const res of reservations.watchNotifications({ afterCursor: cursor }, { signal: s })) {
              if (res.kind.case !== "notification") continue;
              const n = res.kind.value;
              cursor = n.cursor;
              setNotes((all) => [n, ...all.filter((x) => x.id !== n.id)].slice(0, 50));
              setReloads((r) => r + 1);
            }
          });
        })();
      }),
    [],
  );

  const slot = (resource?.slotMinutes || 30) * 60_000;
  const times: number[] = [];
  for (let t = FIRST_HOUR * 3_600_000; t < LAST_HOUR * 3_600_000; t += slot) times.push(t);
  const at = (start: number) => booked.find((r) => timestampMs(r.startTime!) < start + slot && timestampMs(r.endTime!) > start);
  const unread = notes.filter((n) => !n.read).length;

  return (
    <section aria-labelledby="reservations-title">
      <div class="page-head">
        <h1 id="reservations-title">Reservations</h1>
        {me.admin && (
          <button type="button" class="push" onClick={() => setShowNewResource(true)}>
            New resource
          </button>
        )}
      </div>
      <div class="toolbar">
        <Field label="Resource">
          <select value={resourceId} onChange={(e) => setResourceId(e.currentTarget.value)}>
            {resources.map((r) => (
              <option value={r.id}>
                {r.name} ({r.type}, {r.capacity} people)
              </option>
            ))}
          </select>
        </Field>
        <nav class="pager" aria-label="Weeks">
          <button type="button" onClick={() => setWeek(week - 1)}>
            ← Previous week
          </button>
          <button type="button" onClick={() => setWeek(0)} disabled={week === 0}>
            This week
          </button>
          <button type="button" onClick={() => setWeek(week + 1)}>
            Next week →
          </button>
        </nav>
        <span class="muted">Week of {dayLabel(from)} · times in UTC</span>
      </div>
      <ErrorText error={list.error} />
      <div class="two wide-right">
        <div class="calendar-wrap">
          {resource ? (
            <table class="calendar">
              <caption class="sr-only">
                {resource.name}, week of {dayLabel(from)}
              </caption>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  {DAYS.map((_, d) => (
                    <th scope="col">{dayLabel(from + d * DAY)}</th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {times.map((t) => (
                  <tr>
                    <th scope="row">{hhmm(t)}</th>
                    {DAYS.map((_, d) => {
                      const start = from + d * DAY + t;
                      const r = at(start);
                      const label = `${dayLabel(start)} ${hhmm(start)}`;
                      if (r) {
                        const mine = r.userId === me.id;
                        return (
                          <td class={`taken ${mine ? "mine" : ""}`}>
                            <button type="button" disabled={!mine && !me.admin} onClick={() => setChoice({ reservation: r })} aria-label={`${mine ? "Your" : "Taken"} reservation ${label}, ${statusName(r.status)}`}>
                              {mine ? "Yours" : "Taken"} · {statusName(r.status)}
                            </button>
                          </td>
                        );
                      }
                      const past = start + slot <= Date.now();
                      return (
                        <td>
                          <button type="button" class="free" disabled={past} onClick={() => setChoice({ start })} aria-label={`Book ${label}`}>
                            {past ? "" : "Free"}
                          </button>
                        </td>
                      );
                    })}
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <p>No resources yet.{me.admin ? " Create one." : ""}</p>
          )}
        </div>
        <aside aria-labelledby="notifications-title">
          <h2 id="notifications-title">
            Notifications {unread > 0 && <span class="badge bad">{unread} new</span>}
          </h2>
          <ul class="plain notes" aria-live="polite">
            {notes.map((n) => (
              <li key={n.id} class={n.read ? "" : "unread"}>
                <span>
                  {!n.read && <strong>New: </strong>}
                  {n.message}
                  <br />
                  <small class="muted">{n.createTime ? formatTime(timestampMs(n.createTime)) : ""}</small>
                </span>
                {!n.read && (
                  <button
                    type="button"
                    aria-label={`Mark “${n.message}” read`}
                    onClick={() =>
                      void list.run(async () => {
                        const { notification } = await reservations.markNotificationRead({ id: n.id });
                        setNotes((all) => all.map((x) => (x.id === n.id ? notification! : x)));
                      })
                    }
                  >
                    Mark read
                  </button>
                )}
              </li>
            ))}
            {notes.length === 0 && <li>Nothing yet.</li>}
          </ul>
        </aside>
      </div>
      {choice && "start" in choice && resource && (
        <BookForm resource={resource} start={choice.start} slot={slot} onClose={() => (setChoice(null), setReloads((r) => r + 1))} />
      )}
      {choice && "reservation" in choice && resource && (
        <ReservationPanel reservation={choice.reservation} slot={slot} onClose={() => (setChoice(null), setReloads((r) => r + 1))} />
      )}
      {showNewResource && <NewResource onClose={() => (setShowNewResource(false), void list.run(loadResources))} />}
    </section>
  );
}

function BookForm(props: { resource: Resource; start: number; slot: number; onClose: () => void }) {
  const [slots, setSlots] = useState(1);
  const [party, setParty] = useState(1);
  const [notes, setNotes] = useState("");
  const [requestId] = useState(() => crypto.randomUUID());
  const { busy, error, run } = useAction();
  const end = props.start + slots * props.slot;
  const submit = (e: Event) => {
    e.preventDefault();
    void run(async () => {
      try {
        await reservations.createReservation({
          resourceId: props.resource.id,
          startTime: timestampFromMs(props.start),
          endTime: timestampFromMs(end),
          partySize: party,
          notes,
          requestId,
        });
        props.onClose();
      } catch (err) {
        const e = ConnectError.from(err);
        if (e.code === Code.AlreadyExists) {
          const meta = e.findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
          const taken = meta.conflict_start ? ` (${hhmm(Date.parse(meta.conflict_start))}–${hhmm(Date.parse(meta.conflict_end ?? meta.conflict_start))} is booked)` : "";
          throw new ConnectError(`this slot is already taken by another booking${taken}. You will get a notification if it frees up.`, Code.AlreadyExists);
        }
        throw err;
      }
    });
  };
  return (
    <dialog open class="panel" aria-labelledby="book-title">
      <form onSubmit={submit}>
        <h2 id="book-title">
          Book {props.resource.name}: {dayLabel(props.start)} {hhmm(props.start)}–{hhmm(end)} UTC
        </h2>
        <Field label="Length (slots)">
          <input type="number" min={1} max={48} value={slots} onInput={(e) => setSlots(Math.max(1, Number(e.currentTarget.value)))} />
        </Field>
        <Field label="Party size" hint={`At most ${props.resource.capacity}.`}>
          <input type="number" min={1} max={props.resource.capacity} value={party} onInput={(e) => setParty(Number(e.currentTarget.value))} />
        </Field>
        <Field label="Notes">
          <input maxLength={500} value={notes} onInput={(e) => setNotes(e.currentTarget.value)} />
        </Field>
        <ErrorText error={error} />
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy}>
            Book
          </button>
          <button type="button" onClick={props.onClose}>
            Close
          </button>
        </div>
      </form>
    </dialog>
  );
}

function ReservationPanel(props: { reservation: Reservation; slot: number; onClose: () => void }) {
  const r = props.reservation;
  const start = timestampMs(r.startTime!);
  const length = timestampMs(r.endTime!) - start;
  const [moveTo, setMoveTo] = useState(new Date(start).toISOString().slice(0, 16));
  const [reason, setReason] = useState("");
  const { busy, error, run } = useAction();
  const reschedule = () =>
    void run(async () => {
      const next = Date.parse(`${moveTo}:00Z`);
      await reservations.rescheduleReservation({ id: r.id, startTime: timestampFromMs(next), endTime: timestampFromMs(next + length), etag: r.etag });
      props.onClose();
    });
  const cancel = () =>
    void run(async () => {
      await reservations.cancelReservation({ id: r.id, reason });
      props.onClose();
    });
  return (
    <dialog open class="panel" aria-labelledby="reservation-title">
      <h2 id="reservation-title">
        Reservation {dayLabel(start)} {hhmm(start)}–{hhmm(start + length)} UTC ({statusName(r.status)})
      </h2>
      {r.notes && <p>{r.notes}</p>}
      {r.holdExpireTime && r.status === ReservationStatus.PENDING && <p>Held until {formatTime(timestampDate(r.holdExpireTime).getTime())}, waiting for approval.</p>}
      <Field label="Move to (UTC)" hint={`On the slot grid: every ${props.slot / 60_000} minutes.`}>
        <input type="datetime-local" step={props.slot / 1000} value={moveTo} onInput={(e) => setMoveTo(e.currentTarget.value)} />
      </Field>
      <button type="button" onClick={reschedule} disabled={busy}>
        Reschedule
      </button>
      <Field label="Reason for cancelling">
        <input maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
      </Field>
      <ErrorText error={error} />
      <div class="buttons">
        <button type="button" class="danger" onClick={cancel} disabled={busy}>
          Cancel reservation
        </button>
        <button type="button" onClick={props.onClose}>
          Close
        </button>
      </div>
    </dialog>
  );
}

function NewResource(props: { onClose: () => void }) {
  const [form, setForm] = useState({ name: "", type: "room", capacity: 4, slotMinutes: 60, location: "" });
  const { busy, error, run } = useAction();
  const set = (key: keyof typeof form) => (e: Event) => {
    const el = e.currentTarget as HTMLInputElement;
    setForm({ ...form, [key]: el.type === "number" ? Number(el.value) : el.value });
  };
  return (
    <dialog open class="panel" aria-labelledby="resource-title">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run(async () => {
            await reservations.createResource({ resource: { ...form, active: true }, requestId: crypto.randomUUID() });
            props.onClose();
          });
        }}
      >
        <h2 id="resource-title">New resource</h2>
        <Field label="Name">
          <input required value={form.name} onInput={set("name")} />
        </Field>
        <Field label="Type">
          <input required pattern="[a-z][a-z0-9_-]*" value={form.type} onInput={set("type")} />
        </Field>
        <Field label="Capacity">
          <input type="number" min={1} value={form.capacity} onInput={set("capacity")} />
        </Field>
        <Field label="Slot length (minutes)">
          <input type="number" min={5} max={1440} value={form.slotMinutes} onInput={set("slotMinutes")} />
        </Field>
        <Field label="Location">
          <input value={form.location} onInput={set("location")} />
        </Field>
        <ErrorText error={error} />
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy}>
            Create
          </button>
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
