export function Chat() {
  return (
    <section>
      <h1>Chat</h1>
    </section>
  );
}
