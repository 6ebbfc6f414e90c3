import { render } from "preact";
import { useEffect } from "preact/hooks";
import "./style.css";
import { session, signOut } from "./api";
import { navigate, route, useSignal } from "./state";
import { SignIn } from "./pages/sign-in";
import { Inventory } from "./pages/inventory";
import { Chat } from "./pages/chat";
import { Reservations } from "./pages/reservations";
import { Files } from "./pages/files";
import { Monitoring } from "./pages/monitoring";
import { Admin } from "./pages/admin";

interface Page {
  path: string;
  title: string;
  view?: () => preact.JSX.Element;
  admin?: boolean;
  /** Shown in the navigation, not yet usable. */
  pending?: string;
}

const PAGES: Page[] = [
  { path: "/inventory", title: "Inventory", view: Inventory },
  { path: "/chat", title: "Chat", view: Chat },
  { path: "/reservations", title: "Reservations", view: Reservations },
  { path: "/files", title: "Files", view: Files },
  { path: "/monitoring", title: "Monitoring", view: Monitoring },
  { path: "/game", title: "Game", pending: "The game page arrives with the game service." },
  { path: "/admin", title: "Admin", view: Admin, admin: true },
];

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
                  {p.pending && <span class="tag"> soon</span>}
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
        {page?.view ? (
          <page.view />
        ) : page?.pending ? (
          <section>
            <h1>{page.title}</h1>
            <p>{page.pending}</p>
          </section>
        ) : null}
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
