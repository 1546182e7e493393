# Lets Elixir projects depend on bc_gitops with mix alone:
#
#     {:bc_gitops, path: "../bc_gitops"}   # or git: "...", tag: "..."
#
# rebar.config stays the main build. This file reads the application's
# metadata from erlang_src/bc_gitops.app.src, so the two cannot drift, and
# builds the Rust NIF with the same script rebar3 runs (scripts/build_nif.sh,
# needs cargo). No rebar3 and no hex are needed.

defmodule Mix.Tasks.Compile.BcGitopsNif do
  @moduledoc "Builds the bc_gitops NIF with cargo and installs it in the app's priv/."
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = __DIR__
    script = Path.join(root, "scripts/build_nif.sh")

    case System.cmd("sh", [script], stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("bc_gitops: #{script} failed with exit status #{status}")
    end

    built = Path.join(root, "priv/bc_gitops_nif.so")
    dest_dir = Path.join(Mix.Project.app_path(), "priv")
    dest = Path.join(dest_dir, "bc_gitops_nif.so")

    # Mix links the build's priv/ to the source's priv/ when that existed
    # before the build; then the library is already in place. Otherwise
    # (a first build, or build_embedded) it is copied, by rename so that a
    # running VM that has the old file mapped keeps it.
    if same_file?(built, dest) do
      {:noop, []}
    else
      File.mkdir_p!(dest_dir)
      File.cp!(built, dest <> ".tmp")
      File.rename!(dest <> ".tmp", dest)
      {:ok, []}
    end
  end

  defp same_file?(a, b) do
    case {File.stat(a), File.stat(b)} do
      {{:ok, sa}, {:ok, sb}} -> {sa.major_device, sa.inode} == {sb.major_device, sb.inode}
      _ -> false
    end
  end
end

defmodule BcGitops.MixProject do
  use Mix.Project

  def project do
    app = app_src()

    [
      app: :bc_gitops,
      version: to_string(app[:vsn]),
      description: to_string(app[:description]),
      language: :erlang,
      compilers: [:bc_gitops_nif, :erlang, :app],
      erlc_paths: ["erlang_src"],
      erlc_include_path: "include",
      erlc_options: [:debug_info],
      deps: []
    ]
  end

  def application do
    app = app_src()

    [
      mod: app[:mod],
      registered: app[:registered],
      applications: app[:applications],
      env: app[:env]
    ]
  end

  defp app_src do
    {:ok, [{:application, :bc_gitops, app}]} =
      :file.consult(Path.join(__DIR__, "erlang_src/bc_gitops.app.src"))

    app
  end
end
