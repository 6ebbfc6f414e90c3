export function Monitoring() {
  return (
    <section>
      <h1>Monitoring</h1>
    </section>
  );
}
