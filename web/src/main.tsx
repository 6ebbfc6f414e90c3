import { render, type ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./style.css";
import { session, signOut } from "./api";
import { navigate, route, useSignal } from "./state";
import { SignIn } from "./pages/sign-in";

interface Page {
  path: string;
  title: string;
  /** Each page is its own chunk, loaded when first shown (with its service's descriptors). */
  view: () => Promise<ComponentType>;
  admin?: boolean;
}

const PAGES: Page[] = [
  { path: "/inventory", title: "Inventory", view: () => import("./pages/inventory").then((m) => m.Inventory) },
  { path: "/chat", title: "Chat", view: () => import("./pages/chat").then((m) => m.Chat) },
  { path: "/reservations", title: "Reservations", view: () => import("./pages/reservations").then((m) => m.Reservations) },
  { path: "/files", title: "Files", view: () => import("./pages/files").then((m) => m.Files) },
  { path: "/monitoring", title: "Monitoring", view: () => import("./pages/monitoring").then((m) => m.Monitoring) },
  { path: "/game", title: "Game", view: () => import("./pages/game").then((m) => m.Game) },
  { path: "/admin", title: "Admin", view: () => import("./pages/admin").then((m) => m.Admin), admin: true },
];

function Lazy(props: { load: () => Promise<ComponentType> }) {
  const [view, setView] = useState<{ page: ComponentType } | null>(null);
  useEffect(() => {
    let shown = true;
    setView(null);
    void props.load().then((page) => shown && setView({ page }));
    return () => {
      shown = false;
    };
  }, [props.load]);
  return view ? <view.page /> : <p aria-busy="true">Loading…</p>;
}

function App() {
  const current = useSignal(session);
  const path = useSignal(route);
  const visible = PAGES.filter((p) => !p.admin || current?.user.admin);
  const page = current ? visible.find((p) => path === p.path || path.startsWith(`${p.path}/`)) : undefined;
  // Unknown pages (and the admin page for a user) lead to the inventory.
  useEffect(() => {
    if (current && !page) navigate("/inventory");
    document.title = page ? `${page.title} · Agora` : "Agora";
  }, [current, page]);
  if (!current) return <SignIn />;
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Agora</span>
        <nav aria-label="Pages">
          <ul>
            {visible.map((p) => (
              <li key={p.path}>
                <a
                  href={p.path}
                  aria-current={p === page ? "page" : undefined}
                  onClick={(e) => {
                    e.preventDefault();
                    navigate(p.path);
                  }}
                >
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          Signed in as <strong>{current.user.displayName || current.user.username}</strong>
          {current.user.admin && <span class="tag">admin</span>}
        </span>
        <button type="button" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {page && <Lazy key={page.path} load={page.view} />}
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
