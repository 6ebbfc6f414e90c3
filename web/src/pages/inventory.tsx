import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { useEffect, useRef, useState } from "preact/hooks";
import { client, followWatch } from "../api";
import { withAbort } from "../state";
import { ErrorText, Pager, Field, formatTime, useAction } from "../ui";
import { Category, InventoryService, ProductEventType, ProductOrder, ProductSchema, type Product } from "../../../gen/agora/inventory/v1/inventory_pb.js";

const inventory = client(InventoryService);
const PAGE_SIZE = 10;
const CATEGORIES: [Category, string][] = [
  [Category.ELECTRONICS, "Electronics"],
  [Category.CLOTHING, "Clothing"],
  [Category.FOOD, "Food"],
  [Category.OFFICE, "Office"],
  [Category.OTHER, "Other"],
];
const categoryName = (c: Category) => CATEGORIES.find(([v]) => v === c)?.[1] ?? "—";
const COLUMNS: [ProductOrder | null, string][] = [
  [ProductOrder.NAME, "Name"],
  [null, "Category"],
  [ProductOrder.QUANTITY, "Quantity"],
  [null, "Unit price"],
  [ProductOrder.UPDATE_TIME, "Updated"],
];

export function price(p: Product): string {
  const m = p.unitPrice;
  if (!m) return "—";
  const value = Number(m.units) + m.nanos / 1e9;
  return new Intl.NumberFormat(undefined, { style: "currency", currency: m.currencyCode || "EUR" }).format(value);
}

export function Inventory() {
  const [query, setQuery] = useState("");
  const [category, setCategory] = useState(Category.UNSPECIFIED);
  const [lowOnly, setLowOnly] = useState(false);
  const [order, setOrder] = useState(ProductOrder.NAME);
  const [descending, setDescending] = useState(false);
  // Tokens of the pages before the current one, and the current one's.
  const [pages, setPages] = useState<string[]>([""]);
  const [rows, setRows] = useState<Product[]>([]);
  const [next, setNext] = useState("");
  const [editing, setEditing] = useState<Product | "new" | null>(null);
  const [adjusting, setAdjusting] = useState<Product | null>(null);
  const [live, setLive] = useState(false);
  const [reloads, setReloads] = useState(0);
  const list = useAction();
  const token = pages[pages.length - 1]!;

  useEffect(() => {
    void list.run(async () => {
      const res = query.trim()
        ? await inventory.searchProducts({ query: query.trim(), category, pageSize: PAGE_SIZE, pageToken: token })
        : await inventory.listProducts({ category, lowStockOnly: lowOnly, orderBy: order, descending, pageSize: PAGE_SIZE, pageToken: token });
      setRows(res.products);
      setNext(res.nextPageToken);
    });
  }, [query, category, lowOnly, order, descending, token, reloads]);

  // Any filter change starts again at the first page.
  const restart = () => setPages([""]);

  // Live rows: changed products are replaced in place; created or deleted ones reload the page.
  const rowsRef = useRef(rows);
  rowsRef.current = rows;
  useEffect(
    () =>
      withAbort((signal) => {
        followWatch(
          signal,
          (afterCursor, s) => inventory.watchProducts({ afterCursor }, { signal: s }),
          {
            event: ({ product, type }) => {
              if (!product) return;
              if (rowsRef.current.some((r) => r.id === product.id) && product.etag) {
                setRows((current) => current.map((r) => (r.id === product.id ? product : r)));
              }
              if (!rowsRef.current.some((r) => r.id === product.id) || type === ProductEventType.DELETED) setReloads((n) => n + 1);
            },
            resync: () => setReloads((n) => n + 1),
          },
          setLive,
        );
      }),
    [],
  );

  const sortBy = (column: ProductOrder) => {
    if (column === order) setDescending(!descending);
    else {
      setOrder(column);
      setDescending(false);
    }
    restart();
  };

  return (
    <section aria-labelledby="inventory-title">
      <div class="page-head">
        <h1 id="inventory-title">Inventory</h1>
        <span class={`live ${live ? "on" : ""}`}>{live ? "● Live" : "○ Reconnecting…"}</span>
        <button type="button" class="primary" onClick={() => setEditing("new")}>
          New product
        </button>
      </div>
      <form class="toolbar" role="search" onSubmit={(e) => e.preventDefault()}>
        <Field label="Search">
          <input
            type="search"
            value={query}
            placeholder="Name or description"
            onInput={(e) => {
              setQuery(e.currentTarget.value);
              restart();
            }}
          />
        </Field>
        <Field label="Category">
          <select
            value={category}
            onChange={(e) => {
              setCategory(Number(e.currentTarget.value));
              restart();
            }}
          >
            <option value={Category.UNSPECIFIED}>All</option>
            {CATEGORIES.map(([v, name]) => (
              <option value={v}>{name}</option>
            ))}
          </select>
        </Field>
        <label class="check">
          <input
            type="checkbox"
            checked={lowOnly}
            disabled={!!query.trim()}
            onChange={(e) => {
              setLowOnly(e.currentTarget.checked);
              restart();
            }}
          />
          Low stock only
        </label>
      </form>
      <ErrorText error={list.error} />
      <table class="grid" aria-busy={list.busy}>
        <caption class="sr-only">Products{query ? ` matching “${query}”` : ""}</caption>
        <thead>
          <tr>
            {COLUMNS.map(([column, label]) => (
              <th scope="col" aria-sort={column === order && !query ? (descending ? "descending" : "ascending") : undefined}>
                {column !== null && !query ? (
                  <button type="button" class="sort" onClick={() => sortBy(column)}>
                    {label} {column === order ? (descending ? "▼" : "▲") : ""}
                  </button>
                ) : (
                  label
                )}
              </th>
            ))}
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((p) => (
            <tr key={p.id} data-product={p.name}>
              <td>
                {p.name}
                {p.description && <div class="muted">{p.description}</div>}
              </td>
              <td>{categoryName(p.category)}</td>
              <td class="num">
                {p.quantity}{" "}
                {p.lowStock && (
                  <span class="badge warn" title={`At or below the threshold of ${p.lowStockThreshold}`}>
                    ⚠ Low stock
                  </span>
                )}
              </td>
              <td class="num">{price(p)}</td>
              <td>{p.updateTime ? formatTime(timestampMs(p.updateTime)) : ""}</td>
              <td class="actions">
                <button type="button" onClick={() => setEditing(p)} aria-label={`Edit ${p.name}`}>
                  Edit
                </button>
                <button type="button" onClick={() => setAdjusting(p)} aria-label={`Adjust stock of ${p.name}`}>
                  Adjust stock
                </button>
              </td>
            </tr>
          ))}
          {rows.length === 0 && !list.busy && (
            <tr>
              <td colSpan={6}>No products.</td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager label="Pages of products" pages={pages} next={next} onChange={setPages} />
      {editing && (
        <ProductForm
          product={editing === "new" ? null : editing}
          onClose={(changed) => {
            setEditing(null);
            if (changed) setReloads((n) => n + 1);
          }}
        />
      )}
      {adjusting && (
        <AdjustForm
          product={adjusting}
          onClose={() => {
            setAdjusting(null);
            setReloads((n) => n + 1);
          }}
        />
      )}
    </section>
  );
}

function ProductForm(props: { product: Product | null; onClose: (changed: boolean) => void }) {
  const [base, setBase] = useState(props.product);
  const init = (p: Product | null) => ({
    name: p?.name ?? "",
    description: p?.description ?? "",
    category: p?.category ?? Category.OTHER,
    quantity: p?.quantity ?? 0,
    price: p?.unitPrice ? String(Number(p.unitPrice.units) + p.unitPrice.nanos / 1e9) : "0",
    currency: p?.unitPrice?.currencyCode || "EUR",
    lowStockThreshold: p?.lowStockThreshold ?? 5,
  });
  const [form, setForm] = useState(init(props.product));
  const [conflict, setConflict] = useState(false);
  const { busy, error, setError, run } = useAction();
  const set = (key: keyof typeof form) => (e: Event) => {
    const el = e.currentTarget as HTMLInputElement;
    setForm({ ...form, [key]: el.type === "number" || key === "category" ? Number(el.value) : el.value });
  };

  const save = (e: Event) => {
    e.preventDefault();
    setConflict(false);
    const cents = Math.round(Number(form.price) * 100);
    const product = create(ProductSchema, {
      name: form.name,
      description: form.description,
      category: form.category,
      quantity: form.quantity,
      lowStockThreshold: form.lowStockThreshold,
      unitPrice: { currencyCode: form.currency, units: BigInt(Math.floor(cents / 100)), nanos: (cents % 100) * 10_000_000 },
    });
    void run(async () => {
      if (!base) await inventory.createProduct({ product, requestId: crypto.randomUUID() });
      else {
        const paths = ["name", "description", "category", "unit_price", "low_stock_threshold"];
        await inventory.updateProduct({ id: base.id, product, updateMask: create(FieldMaskSchema, { paths }), etag: base.etag }).catch((err) => {
          if (ConnectError.from(err).code === Code.Aborted) setConflict(true);
          throw err;
        });
      }
      props.onClose(true);
    });
  };

  const reload = () =>
    void run(async () => {
      const { product } = await inventory.getProduct({ id: base!.id });
      setBase(product!);
      setForm(init(product!));
      setConflict(false);
      setError(null);
    });

  return (
    <dialog open class="panel" aria-labelledby="product-form-title">
      <form onSubmit={save}>
        <h2 id="product-form-title">{base ? `Edit ${base.name}` : "New product"}</h2>
        <Field label="Name">
          <input required maxLength={200} value={form.name} onInput={set("name")} />
        </Field>
        <Field label="Description">
          <textarea maxLength={4000} value={form.description} onInput={set("description")} />
        </Field>
        <Field label="Category">
          <select value={form.category} onChange={set("category")}>
            {CATEGORIES.map(([v, name]) => (
              <option value={v}>{name}</option>
            ))}
          </select>
        </Field>
        {!base && (
          <Field label="Initial quantity">
            <input type="number" min={0} value={form.quantity} onInput={set("quantity")} />
          </Field>
        )}
        <div class="row">
          <Field label="Unit price">
            <input type="number" min={0} step="0.01" value={form.price} onInput={set("price")} />
          </Field>
          <Field label="Currency">
            <input pattern="[A-Z]{3}" maxLength={3} value={form.currency} onInput={set("currency")} />
          </Field>
        </div>
        <Field label="Low-stock threshold">
          <input type="number" min={0} value={form.lowStockThreshold} onInput={set("lowStockThreshold")} />
        </Field>
        {conflict ? (
          <p class="error" role="alert">
            <strong>Conflict:</strong> someone else changed this product since you opened it.{" "}
            <button type="button" onClick={reload}>
              Reload the latest version
            </button>
          </p>
        ) : (
          <ErrorText error={error} />
        )}
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy}>
            Save
          </button>
          <button type="button" onClick={() => props.onClose(false)}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}

function AdjustForm(props: { product: Product; onClose: () => void }) {
  const [delta, setDelta] = useState(0);
  const [reason, setReason] = useState("");
  const [requestId] = useState(() => crypto.randomUUID());
  const { busy, error, run } = useAction();
  const submit = (e: Event) => {
    e.preventDefault();
    void run(async () => {
      await inventory.adjustStock({ productId: props.product.id, delta, reason, requestId });
      props.onClose();
    });
  };
  return (
    <dialog open class="panel" aria-labelledby="adjust-title">
      <form onSubmit={submit}>
        <h2 id="adjust-title">Adjust stock of {props.product.name}</h2>
        <p>
          In stock: <strong>{props.product.quantity}</strong>
        </p>
        <Field label="Change (negative to remove)">
          <input type="number" required value={delta} onInput={(e) => setDelta(Number(e.currentTarget.value))} />
        </Field>
        <Field label="Reason">
          <input required maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} placeholder="e.g. delivery, sale, breakage" />
        </Field>
        <ErrorText error={error} />
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy || delta === 0}>
            Apply
          </button>
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
