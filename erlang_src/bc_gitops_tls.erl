%%% @doc The TLS client options of every HTTPS request bc_gitops makes
%%% itself (release downloads, notifications): the certificate is always
%%% verified (`verify_peer') against the operating system's CA store plus
%%% the certificates of the `ca_file' option, with the HTTPS hostname
%%% check, and SNI unless the host is an IP address.
-module(bc_gitops_tls).

-include_lib("public_key/include/public_key.hrl").

-export([extra_cacerts/1, http_options/2]).

%% @doc The certificates of a PEM file (`ca_file'), or `[]' for
%% `undefined'. A file that cannot be read, or holds no certificate, is
%% `{error, {bad_ca_file, File, Why}}'.
-spec extra_cacerts(undefined | file:filename_all()) ->
          {ok, [public_key:der_encoded()]} | {error, {bad_ca_file, file:filename_all(), term()}}.
extra_cacerts(undefined) ->
    {ok, []};
extra_cacerts(File) ->
    case file:read_file(File) of
        {ok, Pem} ->
            Ders = try public_key:pem_decode(Pem) of
                       Decoded -> [Der || {'Certificate', Der, not_encrypted} <- Decoded]
                   catch
                       _:_ -> []
                   end,
            case Ders of
                [] -> {error, {bad_ca_file, File, no_certificates}};
                _ -> {ok, Ders}
            end;
        {error, Why} ->
            {error, {bad_ca_file, File, Why}}
    end.

%% @doc httpc's HTTP options for `Url': `[{ssl, Options}]' for an `https'
%% URL, trusting the system's CAs and `Extra' (from {@link extra_cacerts/1}),
%% else `[]'.
-spec http_options(string(), [public_key:der_encoded()]) -> [{ssl, [ssl:tls_client_option()]}].
http_options(Url, Extra) ->
    case uri_string:parse(Url) of
        #{scheme := Scheme, host := Host} when is_list(Scheme), is_list(Host) ->
            case string:lowercase(Scheme) of
                "https" -> [{ssl, client_options(Host, Extra)}];
                _ -> []
            end;
        _ ->
            []
    end.

-spec client_options(string(), [public_key:der_encoded()]) -> [ssl:tls_client_option()].
client_options(Host, Extra) ->
    Sni = case inet:parse_address(Host) of
              {ok, _} -> [];
              {error, _} -> [{server_name_indication, Host}]
          end,
    [{verify, verify_peer},
     {cacerts, system_cacerts() ++ Extra},
     {depth, 10},
     {customize_hostname_check, [{match_fun, public_key:pkix_verify_hostname_match_fun(https)}]}
     | Sni].

-spec system_cacerts() -> [public_key:der_encoded()].
system_cacerts() ->
    try public_key:cacerts_get() of
        Certs -> [Der || #cert{der = Der} <- Certs]
    catch
        _:_ -> []
    end.
