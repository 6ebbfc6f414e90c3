import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { describe } from "./api";

/** A labelled input: every control has a visible label. */
export function Field(props: { label: string; children: ComponentChildren; hint?: string }) {
  return (
    <label class="field">
      <span>{props.label}</span>
      {props.children}
      {props.hint && <small>{props.hint}</small>}
    </label>
  );
}

/** An error announced to screen readers, with a text marker (not colour alone). */
export function ErrorText(props: { error: string | null; children?: ComponentChildren }) {
  if (!props.error) return null;
  return (
    <p class="error" role="alert">
      <strong>Error:</strong> {props.error} {props.children}
    </p>
  );
}

/** Runs an async action, tracking "busy" and the error message to show. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async <T,>(fn: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(null);
    try {
      return await fn();
    } catch (err) {
      setError(describe(err));
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, run };
}

export function formatTime(ms: number): string {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Previous / next through token-paged results: `pages` holds the token of each page seen so far. */
export function Pager(props: { label: string; pages: string[]; next: string; onChange: (pages: string[]) => void }) {
  const { pages, next, onChange } = props;
  return (
    <nav class="pager" aria-label={props.label}>
      <button type="button" disabled={pages.length === 1} onClick={() => onChange(pages.slice(0, -1))}>
        ← Previous
      </button>
      <span>Page {pages.length}</span>
      <button type="button" disabled={!next} onClick={() => onChange([...pages, next])}>
        Next →
      </button>
    </nav>
  );
}
