%%% @doc The `hex' source type: fetches a package release and its hex
%%% dependencies from a hex repository, verifies them, and lays them out so
%%% that its build tool (rebar3 or mix) builds it without going online.
%%%
%%% For every package it needs, {@link fetch/4}:
%%% <ol>
%%% <li>downloads `<repo>/packages/<name>' (a gzip'd `Signed' protobuf),
%%%     verifies the RSA signature of its payload (SHA-512, as hex signs it)
%%%     with the repository's public key, decodes the `Package' and checks
%%%     that its `name' is the name asked for and, when the repository's name
%%%     is known, that its `repository' is that name (a signed registry file
%%%     of another package or repository cannot be substituted);</li>
%%% <li>downloads `<repo>/tarballs/<name>-<version>.tar' and checks its
%%%     SHA-256 against the release's `outer_checksum' before reading it
%%%     (a release without an outer checksum is refused);</li>
%%% <li>reads the outer tar (in memory): `VERSION' must be `3'; the inner
%%%     checksum, SHA-256 of `VERSION', `metadata.config' and
%%%     `contents.tar.gz' concatenated, must equal the release's
%%%     `inner_checksum' and the `CHECKSUM' file; `metadata.config' must
%%%     name the same package and version;</li>
%%% <li>unpacks `contents.tar.gz' with {@link bc_gitops_tar:unpack/3}
%%%     (which refuses unsafe entries) into `<DestDir>/<name>' for the package
%%%     asked for and `<DestDir>/deps/<name>' for its dependencies.</li>
%%% </ol>
%%% Dependencies: the non-optional dependencies of the release, transitively,
%%% from the same repository. Each package gets the highest non-retired
%%% release that satisfies every requirement on it ({@link bc_gitops_semver});
%%% the choice is repeated until it no longer changes (no backtracking).
%%% Dependencies on another repository are refused.
%%%
%%% Build: rebar3 builds the package when it can (`rebar3' in its
%%% metadata's `build_tools', or a `rebar.config'), else mix (`mix', or a
%%% `mix.exs'); the `build' option (the spec's `source.build') chooses
%%% between the two for a package that has both. A dependency may be a
%%% rebar3 or a mix package. The result says where the build runs
%%% (`build_dir') and with what (`tool'); each dependency's directory is
%%% linked where that tool looks for it:
%%% <ul>
%%% <li>a rebar3 package whose dependencies all build with rebar3:
%%%     `<source_dir>/_checkouts/<app>'. rebar3 builds checkouts in place of
%%%     its declared deps, so the build needs no network (tool `rebar3',
%%%     `build_dir' is `source_dir').</li>
%%% <li>a mix package: `<source_dir>/deps/<app>', where mix keeps hex
%%%     dependencies. {@link bc_gitops_build} runs `mix compile' offline,
%%%     without the Hex archive (neither installed nor fetched): mix finds
%%%     the dependencies there through {@link bc_gitops_mix_scm} and builds
%%%     each with its own tool, mix or rebar3, in dependency order (tool
%%%     `mix', `build_dir' is `source_dir').</li>
%%% <li>a rebar3 package with a mix dependency, which rebar3 cannot build
%%%     without a plugin from hex: `<DestDir>/_mix/deps/<app>', next to a
%%%     `mix.exs' written there whose only dependency is the package (by
%%%     path, built by rebar3 as mix builds any rebar3 dependency, with the
%%%     `prod' profile). mix builds it as above (tool `mix', `build_dir' is
%%%     `<DestDir>/_mix'); that project has no code of its own.</li>
%%% </ul>
%%%
%%% Options: `repo_url' (default `https://repo.hex.pm', or `$HEX_MIRROR'
%%% when set, as mix does), `public_key' (PEM; default hex.pm's key, required
%%% with a `repo_url'), `repo_name' (the repository's name to check
%%% registries against; `<<"hexpm">>' for the default), `timeout' (ms per
%%% download, default 120000), `ca_file', `max_bytes' (per download, default
%%% 64 MiB), `max_unpacked' (per package, default 256 MiB), `build'
%%% (`rebar3' or `mix', see above).
%%%
%%% Package names from the registry stay binaries, and must match
%%% `[a-z][a-z0-9_]*'. `metadata.config' is read as terms (never evaluated)
%%% by the NIF, which makes no atom: an atom the VM does not know yet fails
%%% the package. On error `DestDir' may be left partly written;
%%% the caller removes it.
%%%
%%% Errors: `{package_not_found, Name}', `{bad_signature, Name}',
%%% `{registry_mismatch, name | repository, Expected, Got}',
%%% `{version_not_found, Name, Version}', `{no_matching_version, Name, Req}',
%%% `{dependency_conflict, Name, [{Requirer, Req}]}',
%%% `{checksum_mismatch, outer | inner | checksum_file, Name, Version}',
%%% `{missing_outer_checksum, Name, Version}', `{bad_tarball, Name, Version,
%%% Why}', `{unpack_failed, Name, Version, Why}', `{unsupported, Why}' (Why:
%%% `{build_tools, Name, Tools}', `{build_tool, Name, Wanted}',
%%% `{dependency_repository, Name, Repo}'),
%%% `{bad_name, Name}', `{bad_version, Version}', `{bad_public_key, Why}',
%%% `{already_exists, Dir}', `{bad_registry, Name, Why}', and the errors of
%%% {@link bc_gitops_download:to_file/3}.
-module(bc_gitops_hex).

-include_lib("public_key/include/public_key.hrl").

-export([fetch/4]).

-export_type([opts/0]).

-type opts() :: #{repo_url => binary() | string(),
                  public_key => binary(),
                  repo_name => binary(),
                  timeout => pos_integer(),
                  ca_file => file:filename_all() | undefined,
                  max_bytes => pos_integer(),
                  max_unpacked => pos_integer(),
                  build => bc_gitops_build:tool() | undefined}.

-define(HEXPM_URL, "https://repo.hex.pm").
%% https://hex.pm/docs/public_keys
-define(HEXPM_PUBLIC_KEY, <<
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApqREcFDt5vV21JVe2QNB\n"
    "Edvzk6w36aNFhVGWN5toNJRjRJ6m4hIuG4KaXtDWVLjnvct6MYMfqhC79HAGwyF+\n"
    "IqR6Q6a5bbFSsImgBJwz1oadoVKD6ZNetAuCIK84cjMrEFRkELtEIPNHblCzUkkM\n"
    "3rS9+DPlnfG8hBvGi6tvQIuZmXGCxF/73hU0/MyGhbmEjIKRtG6b0sJYKelRLTPW\n"
    "XgK7s5pESgiwf2YC/2MGDXjAJfpfCd0RpLdvd4eRiXtVlE9qO9bND94E7PgQ/xqZ\n"
    "J1i2xWFndWa6nfFnRxZmCStCOZWYYPlaxr+FZceFbpMwzTNs4g3d4tLNUcbKAIH4\n"
    "0wIDAQAB\n"
    "-----END PUBLIC KEY-----\n">>).
-define(MAX_REGISTRY, 16 * 1024 * 1024).
-define(MAX_ROUNDS, 100).

%% @doc Fetches `Package' at `Version' and its dependencies into `DestDir'.
-spec fetch(Package :: binary(), Version :: binary(), DestDir :: file:filename(),
            Opts :: opts()) ->
          {ok, #{source_dir := file:filename(), build_dir := file:filename(),
                 tool := rebar3 | mix, deps := [{binary(), binary(), file:filename()}]}}
              | {error, term()}.
fetch(Package, Version, DestDir, Opts) ->
    Dest = filename:absname(DestDir),
    Tmp = filename:join(Dest, ".bc_gitops_hex." ++
                            integer_to_list(erlang:unique_integer([positive]))),
    try
        valid_name(Package),
        bc_gitops_semver:parse_version(Version) =/= error orelse fail({bad_version, Version}),
        Ctx = context(Opts, Tmp),
        mkdir(Dest),
        mkdir(Tmp),
        {Pkg, Reg} = registry(Package, Ctx, #{}),
        Release = case [R || #{version := V} = R <- maps:get(releases, Pkg), V =:= Version] of
                      [R | _] -> R;
                      [] -> fail({version_not_found, Package, Version})
                  end,
        Selected = resolve(Package, Release, Ctx, Reg),
        {Source, Meta} = fetch_release(Package, Release,
                                       filename:join(Dest, binary_to_list(Package)), Ctx),
        Tool = root_tool(Package, Source, Meta, maps:get(build, Opts, undefined)),
        Deps = [begin
                    DepDest = filename:join([Dest, "deps", binary_to_list(Name)]),
                    {Dir, DepMeta} = fetch_release(Name, Rel, DepDest, Ctx),
                    {Name, V, App, Dir, dep_tools(Name, Dir, DepMeta)}
                end || {Name, {V, Rel, App}} <- lists:sort(maps:to_list(Selected))],
        {BuildDir, BuildTool} = layout(Package, Tool, Source, Meta, Deps),
        {ok, #{source_dir => Source, build_dir => BuildDir, tool => BuildTool,
               deps => [{N, V, D} || {N, V, _, D, _} <- Deps]}}
    catch
        throw:{?MODULE, Why} -> {error, Why}
    after
        _ = file:del_dir_r(Tmp)
    end.

%%====================================================================
%% Options
%%====================================================================

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({?MODULE, Why}).

-spec context(opts(), file:filename()) -> map().
context(Opts, Tmp) ->
    {Url, DefaultKey, DefaultName} =
        case Opts of
            #{repo_url := U} ->
                {U, undefined, undefined};
            _ ->
                case os:getenv("HEX_MIRROR") of
                    Mirror when is_list(Mirror), Mirror =/= "" ->
                        {Mirror, ?HEXPM_PUBLIC_KEY, <<"hexpm">>};
                    _ ->
                        {?HEXPM_URL, ?HEXPM_PUBLIC_KEY, <<"hexpm">>}
                end
        end,
    UrlStr = case bc_gitops_download:url(Url) of
                 {ok, S} -> string:trim(S, trailing, "/");
                 error -> fail({bad_repo_url, Url})
             end,
    Pem = maps:get(public_key, Opts, DefaultKey),
    Pem =/= undefined orelse fail({bad_public_key, missing}),
    #{url => UrlStr,
      key => decode_key(Pem),
      repo_name => maps:get(repo_name, Opts, DefaultName),
      tmp => Tmp,
      download => #{timeout => maps:get(timeout, Opts, 120000),
                    ca_file => maps:get(ca_file, Opts, undefined),
                    max_bytes => maps:get(max_bytes, Opts, 64 * 1024 * 1024),
                    caller => self()},
      max_unpacked => maps:get(max_unpacked, Opts, 256 * 1024 * 1024)}.

-spec decode_key(binary()) -> #'RSAPublicKey'{}.
decode_key(Pem) ->
    try public_key:pem_decode(Pem) of
        [Entry | _] ->
            case public_key:pem_entry_decode(Entry) of
                #'RSAPublicKey'{} = Key -> Key;
                _ -> fail({bad_public_key, not_rsa})
            end;
        [] ->
            fail({bad_public_key, no_pem_entry})
    catch
        error:Why -> fail({bad_public_key, Why})
    end.

-spec valid_name(term()) -> ok.
valid_name(Name) when is_binary(Name), byte_size(Name) =< 255 ->
    case re:run(Name, <<"^[a-z][a-z0-9_]*$">>) of
        {match, _} -> ok;
        nomatch -> fail({bad_name, Name})
    end;
valid_name(Name) ->
    fail({bad_name, Name}).

-spec mkdir(file:filename()) -> ok.
mkdir(Dir) ->
    case filelib:ensure_path(Dir) of
        ok -> ok;
        {error, Why} -> fail({file_error, mkdir, Dir, Why})
    end.

%%====================================================================
%% Registry
%%====================================================================

%% The verified `Package' message of `Name', from the cache `Reg' or the
%% repository.
-spec registry(binary(), map(), map()) -> {map(), map()}.
registry(Name, _Ctx, Reg) when is_map_key(Name, Reg) ->
    {maps:get(Name, Reg), Reg};
registry(Name, #{url := Url, key := Key, repo_name := RepoName} = Ctx, Reg) ->
    valid_name(Name),
    Body = download(Url ++ "/packages/" ++ binary_to_list(Name), Ctx, ?MAX_REGISTRY,
                    {package_not_found, Name}),
    Signed = case bc_gitops_nif:gunzip(Body, ?MAX_REGISTRY) of
                 {ok, S} -> S;
                 {error, _} -> fail({bad_registry, Name, gzip})
             end,
    Payload = case bc_gitops_protobuf:decode_signed(Signed) of
                  {ok, #{payload := P, signature := Sig}} ->
                      verify(P, Sig, Key) orelse fail({bad_signature, Name}),
                      P;
                  {ok, _} -> fail({bad_signature, Name});
                  {error, Why} -> fail({bad_registry, Name, Why})
              end,
    Pkg = case bc_gitops_protobuf:decode_package(Payload) of
              {ok, M} -> M;
              {error, Why2} -> fail({bad_registry, Name, Why2})
          end,
    case maps:get(name, Pkg, undefined) of
        Name -> ok;
        Other -> fail({registry_mismatch, name, Name, Other})
    end,
    case {RepoName, maps:get(repository, Pkg, undefined)} of
        {undefined, _} -> ok;
        {_, undefined} -> ok;
        {R, R} -> ok;
        {R, Got} -> fail({registry_mismatch, repository, R, Got})
    end,
    {Pkg, Reg#{Name => Pkg}}.

-spec verify(binary(), binary(), #'RSAPublicKey'{}) -> boolean().
verify(Payload, Sig, Key) ->
    try public_key:verify(Payload, sha512, Sig, Key)
    catch _:_ -> false
    end.

%% Downloads `Url' into a temporary file and returns the file's content and
%% SHA-256; a 403 or 404 is `NotFound'.
-spec download(string(), map(), pos_integer(), term()) -> binary().
download(Url, Ctx, Max, NotFound) ->
    {Body, _Hex} = download_file(Url, Ctx, Max, NotFound),
    Body.

-spec download_file(string(), map(), pos_integer(), term()) -> {binary(), binary()}.
download_file(Url, #{tmp := Tmp, download := DlOpts}, Max, NotFound) ->
    File = filename:join(Tmp, "dl." ++ integer_to_list(erlang:unique_integer([positive]))),
    case bc_gitops_download:to_file(Url, File, DlOpts#{max_bytes => Max}) of
        {ok, Hex} ->
            case file:read_file(File) of
                {ok, Body} ->
                    _ = file:delete(File),
                    {Body, Hex};
                {error, Why} ->
                    fail({file_error, read, File, Why})
            end;
        {error, {http_status, Code}} when Code =:= 403; Code =:= 404 ->
            fail(NotFound);
        {error, Why} ->
            fail(Why)
    end.

%%====================================================================
%% Resolution
%%====================================================================

%% Package name => {Version, Release, App}, for every dependency reached
%% from the root release.
-spec resolve(binary(), map(), map(), map()) -> #{binary() => {binary(), map(), binary()}}.
resolve(Root, RootRel, Ctx, Reg) ->
    resolve(Root, RootRel, Ctx, Reg, #{}, 0).

-spec resolve(binary(), map(), map(), map(), map(), non_neg_integer()) -> map().
resolve(_Root, _RootRel, _Ctx, _Reg, _Selected, Round) when Round > ?MAX_ROUNDS ->
    fail({dependency_resolution, no_fixpoint});
resolve(Root, RootRel, Ctx, Reg0, Selected, Round) ->
    Reqs = collect([{Root, RootRel}], Selected, Ctx, #{}, [Root]),
    {NewSelected, Reg} =
        maps:fold(fun(Name, NameReqs, {Acc, R0}) ->
                          {Choice, R1} = select(Root, RootRel, Name, NameReqs, Ctx, R0),
                          {case Choice of
                               root -> Acc;
                               _ -> Acc#{Name => Choice}
                           end, R1}
                  end, {#{}, Reg0}, Reqs),
    case NewSelected =:= Selected of
        true -> Selected;
        false -> resolve(Root, RootRel, Ctx, Reg, NewSelected, Round + 1)
    end.

%% The requirements on each package reached from the queue through the
%% current selection: Name => [{Requirer, Requirement, App}].
-spec collect([{binary(), map()}], map(), map(), map(), [binary()]) -> map().
collect([], _Selected, _Ctx, Reqs, _Seen) ->
    Reqs;
collect([{From, Rel} | Queue], Selected, #{repo_name := RepoName} = Ctx, Reqs0, Seen0) ->
    Deps = [D || D <- maps:get(dependencies, Rel), not maps:get(optional, D, false)],
    {Reqs, Seen, More} =
        lists:foldl(
          fun(#{package := Name, requirement := Req} = D, {RAcc, SAcc, QAcc}) ->
                  valid_name(Name),
                  App = maps:get(app, D, Name),
                  valid_name(App),
                  case maps:get(repository, D, RepoName) of
                      RepoName -> ok;
                      Other -> fail({unsupported, {dependency_repository, Name, Other}})
                  end,
                  RAcc1 = maps:update_with(Name, fun(L) -> L ++ [{From, Req, App}] end,
                                           [{From, Req, App}], RAcc),
                  case {lists:member(Name, SAcc), Selected} of
                      {false, #{Name := {_, DepRel, _}}} ->
                          {RAcc1, [Name | SAcc], QAcc ++ [{Name, DepRel}]};
                      _ ->
                          {RAcc1, SAcc, QAcc}
                  end
          end, {Reqs0, Seen0, []}, Deps),
    collect(Queue ++ More, Selected, Ctx, Reqs, Seen).

-spec select(binary(), map(), binary(), [{binary(), binary(), binary()}], map(), map()) ->
          {root | {binary(), map(), binary()}, map()}.
select(Root, #{version := RootVersion}, Root, NameReqs, _Ctx, Reg) ->
    %% A dependency cycle back to the package asked for.
    case bc_gitops_semver:highest_matching([RootVersion], [R || {_, R, _} <- NameReqs]) of
        {ok, _} -> {root, Reg};
        _ -> no_match(Root, NameReqs)
    end;
select(_Root, _RootRel, Name, NameReqs, Ctx, Reg0) ->
    {Pkg, Reg} = registry(Name, Ctx, Reg0),
    Releases = [R || R <- maps:get(releases, Pkg), not maps:is_key(retired, R)],
    case bc_gitops_semver:highest_matching([V || #{version := V} <- Releases],
                                           [R || {_, R, _} <- NameReqs]) of
        {ok, V} ->
            [Rel | _] = [R || #{version := RV} = R <- Releases, RV =:= V],
            [{_, _, App} | _] = NameReqs,
            {{V, Rel, App}, Reg};
        none ->
            no_match(Name, NameReqs);
        {error, {bad_requirement, R}} ->
            fail({bad_requirement, Name, R})
    end.

-spec no_match(binary(), [{binary(), binary(), binary()}]) -> no_return().
no_match(Name, NameReqs) ->
    case lists:usort([R || {_, R, _} <- NameReqs]) of
        [Req] -> fail({no_matching_version, Name, Req});
        _ -> fail({dependency_conflict, Name, lists:usort([{F, R} || {F, R, _} <- NameReqs])})
    end.

%%====================================================================
%% Tarballs
%%====================================================================

%% Downloads, verifies and unpacks one release into `Final'; returns the
%% directory and the package metadata.
-spec fetch_release(binary(), map(), file:filename(), map()) ->
          {file:filename(), #{binary() => term()}}.
fetch_release(Name, #{version := V, inner_checksum := Inner} = Rel,
              Final, #{url := Url, tmp := Tmp, download := #{max_bytes := Max}} = Ctx) ->
    filelib:is_file(Final) andalso fail({already_exists, Final}),
    Outer = case Rel of
                #{outer_checksum := O} -> O;
                _ -> fail({missing_outer_checksum, Name, V})
            end,
    TarUrl = Url ++ "/tarballs/" ++ binary_to_list(Name) ++ "-" ++ binary_to_list(V) ++ ".tar",
    {Tar, Hex} = download_file(TarUrl, Ctx, Max, {tarball_not_found, Name, V}),
    binary:decode_hex(Hex) =:= Outer orelse fail({checksum_mismatch, outer, Name, V}),
    Files = case erl_tar:extract({binary, Tar}, [memory]) of
                {ok, Fs} -> Fs;
                {error, Why} -> fail({bad_tarball, Name, V, Why})
            end,
    Get = fun(F) ->
                  case lists:keyfind(F, 1, Files) of
                      {_, B} -> B;
                      false -> fail({bad_tarball, Name, V, {missing, F}})
                  end
          end,
    Version = Get("VERSION"),
    Version =:= <<"3">> orelse fail({bad_tarball, Name, V, {tarball_version, Version}}),
    MetaBin = Get("metadata.config"),
    Contents = Get("contents.tar.gz"),
    Computed = crypto:hash(sha256, [Version, MetaBin, Contents]),
    Computed =:= Inner orelse fail({checksum_mismatch, inner, Name, V}),
    string:uppercase(string:trim(Get("CHECKSUM"))) =:= binary:encode_hex(Computed)
        orelse fail({checksum_mismatch, checksum_file, Name, V}),
    Meta = metadata(Name, V, MetaBin),
    ContentsFile = filename:join(Tmp, binary_to_list(Name) ++ "-contents.tar.gz"),
    ok = write(ContentsFile, Contents),
    Staging = filename:join(Tmp, binary_to_list(Name) ++ "-staging"),
    case bc_gitops_tar:unpack(ContentsFile, Staging, maps:get(max_unpacked, Ctx)) of
        ok -> ok;
        {error, Why2} -> fail({unpack_failed, Name, V, Why2})
    end,
    mkdir(filename:dirname(Final)),
    case file:rename(Staging, Final) of
        ok -> {Final, Meta};
        {error, Why3} -> fail({file_error, rename, Final, Why3})
    end.

-spec write(file:filename(), binary()) -> ok.
write(File, Bin) ->
    case file:write_file(File, Bin) of
        ok -> ok;
        {error, Why} -> fail({file_error, write, File, Why})
    end.

%% The metadata as a map of binary keys; it must name `Name' and `V'. It is
%% read without making atoms: a package could otherwise add any number to
%% the VM for good.
-spec metadata(binary(), binary(), binary()) -> #{binary() => term()}.
metadata(Name, V, Bin) ->
    Terms = case bc_gitops_nif:consult(Bin) of
                {ok, Ts} -> Ts;
                {error, Why} -> fail({bad_tarball, Name, V, {metadata, Why}})
            end,
    Meta = maps:from_list([{K, Val} || {K, Val} <- Terms, is_binary(K)]),
    case Meta of
        #{<<"name">> := Name, <<"version">> := V} -> Meta;
        _ -> fail({bad_tarball, Name, V, metadata_mismatch})
    end.

%%====================================================================
%% Build layout
%%====================================================================

%% The tool that builds the package: `Wanted' (the spec's `build') when
%% given, else rebar3 when it can, else mix.
-spec root_tool(binary(), file:filename(), map(), bc_gitops_build:tool() | undefined) ->
          rebar3 | mix.
root_tool(Name, Dir, Meta, Wanted) ->
    Tools = tools(Dir, Meta),
    case {Wanted, Tools} of
        {undefined, [T | _]} -> T;
        {undefined, []} -> fail({unsupported, {build_tools, Name, build_tools(Meta)}});
        _ ->
            lists:member(Wanted, Tools) orelse fail({unsupported, {build_tool, Name, Wanted}}),
            Wanted
    end.

%% A dependency is built by rebar3 or mix, whichever builds the package.
-spec dep_tools(binary(), file:filename(), map()) -> [rebar3 | mix, ...].
dep_tools(Name, Dir, Meta) ->
    case tools(Dir, Meta) of
        [] -> fail({unsupported, {build_tools, Name, build_tools(Meta)}});
        Tools -> Tools
    end.

%% rebar3 (`rebar3' in the metadata's `build_tools', or a `rebar.config'),
%% then mix (`mix' in `build_tools', or a `mix.exs'), as far as they apply.
-spec tools(file:filename(), map()) -> [rebar3 | mix].
tools(Dir, Meta) ->
    Listed = build_tools(Meta),
    [T || {T, File} <- [{rebar3, "rebar.config"}, {mix, "mix.exs"}],
          lists:member(atom_to_binary(T), Listed)
              orelse filelib:is_regular(filename:join(Dir, File))].

-spec build_tools(map()) -> list().
build_tools(Meta) ->
    case maps:get(<<"build_tools">>, Meta, []) of
        L when is_list(L) -> L;
        _ -> []
    end.

%% Where the build runs and with what; each dependency's directory is
%% linked where that tool looks for it (see the module doc).
-spec layout(binary(), rebar3 | mix, file:filename(), map(),
             [{binary(), binary(), binary(), file:filename(), [rebar3 | mix]}]) ->
          {file:filename(), rebar3 | mix}.
layout(_Package, mix, Source, _Meta, Deps) ->
    links(filename:join(Source, "deps"), Deps),
    {Source, mix};
layout(Package, rebar3, Source, Meta, Deps) ->
    case [N || {N, _, _, _, [mix]} <- Deps] of
        [] ->
            links(filename:join(Source, "_checkouts"), Deps),
            {Source, rebar3};
        _MixOnly ->
            %% `_mix': no package name starts with `_'.
            Wrapper = filename:join(filename:dirname(Source), "_mix"),
            App = maps:get(<<"app">>, Meta, Package),
            valid_name(App),
            mkdir(Wrapper),
            write(filename:join(Wrapper, "mix.exs"),
                  iolist_to_binary(
                    ["# Written by bc_gitops: builds the hex package ", Package,
                     " (rebar3) and its\n# dependencies, mix and rebar3 ones, offline.\n"
                     "defmodule BcGitops.HexRoot.MixProject do\n  use Mix.Project\n\n"
                     "  def project do\n"
                     "    [app: :bc_gitops_hex_root, version: \"0.0.0\", compilers: [],\n"
                     "     consolidate_protocols: false,\n"
                     "     deps: [{:", App, ", path: \"../", Package, "\", manager: :rebar3}]]\n"
                     "  end\nend\n"])),
            links(filename:join(Wrapper, "deps"), Deps),
            {Wrapper, mix}
    end.

%% Each dependency's directory, linked as `<Dir>/<app>'.
-spec links(file:filename(), [{binary(), binary(), binary(), file:filename(), list()}]) -> ok.
links(_Dir, []) ->
    ok;
links(Dir, Deps) ->
    mkdir(Dir),
    lists:foreach(fun({_Name, _V, App, DepDir, _Tools}) ->
                          Link = filename:join(Dir, binary_to_list(App)),
                          case file:make_symlink(DepDir, Link) of
                              ok -> ok;
                              {error, Why} -> fail({file_error, symlink, Link, Why})
                          end
                  end, Deps).
