%%% Builds a hex repository on disk in the real format, for the tests:
%%% signed, gzip'd `/packages/<name>' registry files and `/tarballs/' package
%%% tarballs (VERSION 3, CHECKSUM, metadata.config, contents.tar.gz) of
%%% small rebar3 packages the tests describe, or of the files a test gives
%%% (its mix packages).
-module(bc_gitops_hex_repo).

-include_lib("public_key/include/public_key.hrl").

-export([init/1, fetch_opts/2, public_pem/1, registry/5, release/6, release/7, serve/2]).

-define(REPO, <<"test_repo">>).

%% A repository directory (`<Base>/repo', empty), a directory for the
%% tarballs being made (`<Base>/work') and a new signing key, with inets
%% and ssl started to serve and fetch: {Repo, Work, Key}.
init(Base) ->
    {ok, _} = application:ensure_all_started(inets),
    {ok, _} = application:ensure_all_started(ssl),
    Repo = filename:join(Base, "repo"),
    Work = filename:join(Base, "work"),
    [ok = filelib:ensure_path(D) || D <- [filename:join(Repo, "packages"),
                                         filename:join(Repo, "tarballs"), Work]],
    {Repo, Work, public_key:generate_key({rsa, 2048, 65537})}.

%% bc_gitops_hex:fetch/4 options for the repository served at `Url' and
%% signed with the key of `Pem'.
fetch_opts(Url, Pem) ->
    #{repo_url => Url, public_key => Pem, repo_name => ?REPO, timeout => 30000}.

%% Serves `Repo' over http on 127.0.0.1: {Pid, BaseUrl}.
serve(Repo, ServerRoot) ->
    ok = filelib:ensure_path(ServerRoot),
    {ok, Pid} = inets:start(httpd, [{port, 0}, {server_name, "localhost"},
                                    {server_root, ServerRoot}, {document_root, Repo},
                                    {bind_address, {127, 0, 0, 1}},
                                    {modules, [mod_alias, mod_get, mod_head]}]),
    [{port, Port}] = httpd:info(Pid, [port]),
    {Pid, iolist_to_binary(["http://127.0.0.1:", integer_to_list(Port)])}.

public_pem(#'RSAPrivateKey'{modulus = N, publicExponent = E}) ->
    Pub = #'RSAPublicKey'{modulus = N, publicExponent = E},
    public_key:pem_encode([public_key:pem_entry_encode('SubjectPublicKeyInfo', Pub)]).

%% Writes `/packages/<File>': a gzip'd Signed Package named `Name'.
registry(Repo, File, Name, Releases, Key) ->
    Payload = bc_gitops_protobuf:encode_package(#{name => Name, repository => ?REPO,
                                                  releases => Releases}),
    Signed = bc_gitops_protobuf:encode_signed(
               #{payload => Payload, signature => public_key:sign(Payload, sha512, Key)}),
    ok = file:write_file(filename:join([Repo, "packages", File]), zlib:gzip(Signed)).

%% Writes `/tarballs/<name>-<version>.tar' of a small rebar3 package and
%% returns its Release message.
release(Repo, Work, Name, Version, Deps, rebar3) ->
    release(Repo, Work, Name, Version, Deps, rebar3, contents(Name, Version, Deps)).

%% The same, of a package made of `Files' ([{Path, Binary}]) built by `Tool'.
release(Repo, Work, Name, Version, Deps, Tool, Files) ->
    N = binary_to_list(Name),
    Contents = tar(Work, [{F, B} || {F, B} <- Files], [compressed]),
    Meta = iolist_to_binary(
             [io_lib:format("~p.~n", [T])
              || T <- [{<<"name">>, Name}, {<<"version">>, Version}, {<<"app">>, Name},
                       {<<"description">>, <<"test package">>},
                       {<<"licenses">>, [<<"Apache-2.0">>]},
                       {<<"build_tools">>, [atom_to_binary(Tool)]},
                       {<<"files">>, [list_to_binary(F) || {F, _} <- Files]},
                       {<<"requirements">>,
                        [{D, [{<<"app">>, D}, {<<"optional">>, false},
                              {<<"requirement">>, R}, {<<"repository">>, <<"hexpm">>}]}
                         || {D, R} <- Deps]}]]),
    Inner = crypto:hash(sha256, [<<"3">>, Meta, Contents]),
    Outer = tar(Work, [{"VERSION", <<"3">>},
                       {"CHECKSUM", string:uppercase(binary:encode_hex(Inner))},
                       {"metadata.config", Meta}, {"contents.tar.gz", Contents}], []),
    ok = file:write_file(filename:join([Repo, "tarballs", N ++ "-" ++ binary_to_list(Version)
                                        ++ ".tar"]), Outer),
    #{version => Version, inner_checksum => Inner, outer_checksum => crypto:hash(sha256, Outer),
      dependencies => [#{package => D, requirement => R, app => D} || {D, R} <- Deps]}.

tar(Work, Entries, Opts) ->
    File = filename:join(Work, integer_to_list(erlang:unique_integer([positive])) ++ ".tar"),
    ok = erl_tar:create(File, Entries, Opts),
    {ok, Bin} = file:read_file(File),
    Bin.

contents(Name, Version, Deps) ->
    N = binary_to_list(Name),
    DepAtoms = [binary_to_list(D) || {D, _} <- Deps],
    RebarDeps = ["{", string:join([D ++ ", \"" ++ binary_to_list(R) ++ "\""
                                   || {D, {_, R}} <- lists:zip(DepAtoms, Deps)], "}, {"), "}"],
    [{"rebar.config",
      iolist_to_binary(["{erl_opts, [debug_info]}.\n{deps, [",
                        case Deps of [] -> ""; _ -> RebarDeps end, "]}.\n"])},
     {"src/" ++ N ++ ".app.src",
      iolist_to_binary(io_lib:format("~p.~n",
                                     [{application, list_to_atom(N),
                                       [{description, "test"}, {vsn, binary_to_list(Version)},
                                        {applications,
                                         [kernel, stdlib | [list_to_atom(D) || D <- DepAtoms]]},
                                        {registered, []}, {env, []}]}]))},
     {"src/" ++ N ++ ".erl", module(Name, Version)}].

module(<<"hx_app">>, _Version) ->
    <<"-module(hx_app).\n-export([hello/0]).\nhello() -> {hx_app, hx_dep:version()}.\n">>;
module(Name, Version) ->
    iolist_to_binary(["-module(", Name, ").\n-export([version/0]).\nversion() -> <<\"",
                      Version, "\">>.\n"]).
